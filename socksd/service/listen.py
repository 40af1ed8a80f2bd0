"""
How socksd listens: the listen backlog it asks for (L{withBacklog}),
C{TCP_FASTOPEN} on the listening sockets (L{FastOpenEndpoint} and
L{setFastOpen}, for C{--tcp-fastopen}; with C{--workers}, the parent sets it
on the sockets it shares), a failure to listen told in one line
(L{listeningService}, L{StartupError}), and the report of connections the
listening sockets could not accept (L{AcceptErrors},
L{ReportingEndpoint}): out of file descriptors, Twisted's accept loop logs
a line or three per connection, thousands a second; socksd logs one line a
second with a count, and counts them in the metrics.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger, globalLogPublisher
from zope.interface import implementer

from socksd.server.relay._transport import redirectAcceptLog

__all__ = [
    "LISTEN_BACKLOG",
    "withBacklog",
    "FastOpenEndpoint",
    "setFastOpen",
    "StartupError",
    "explainListenError",
    "listeningService",
    "reportStartupErrors",
    "AcceptErrors",
    "ReportingEndpoint",
]

log = Logger()

#: The listen backlog socksd asks for when a C{--listen} description gives
#: none (Twisted's default is 50, too few for bursts of connections).
LISTEN_BACKLOG = 1024

_BACKLOG_KINDS = frozenset({"tcp", "tcp6", "ssl", "unix"})


def withBacklog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """
    Add C{:backlog=BACKLOG} to a C{tcp}, C{tcp6}, C{ssl} or C{unix} server
    endpoint description (also behind C{haproxy:}) that does not say
    C{backlog=}; return any other description unchanged.
    """
    inner = description
    while inner.startswith("haproxy:"):
        inner = inner[len("haproxy:") :]
    try:
        args, kwargs = endpoints._parse(inner)
    except Exception:
        return description
    kind = args[0] if args else ""
    if kind not in _BACKLOG_KINDS or "backlog" in kwargs:
        return description
    return f"{description}:backlog={backlog}"


def setFastOpen(port: Any, queue: int) -> bool:
    """
    Set C{TCP_FASTOPEN} with C{queue} on a listening C{port}'s socket (the
    kernel takes it on a socket that already listens).  A socket that
    cannot take it (a UNIX socket, a kernel without the option) keeps
    listening without it, and that is logged.

    @return: whether the option is set.
    """
    sock = getattr(port, "socket", None)
    option = getattr(socket, "TCP_FASTOPEN", None)
    try:
        if sock is None or option is None or sock.family == socket.AF_UNIX:
            raise OSError("no TCP socket to set TCP_FASTOPEN on")
        sock.setsockopt(socket.IPPROTO_TCP, option, queue)
    except OSError as error:
        log.warn(
            "listening without TCP_FASTOPEN on {port}: {error}",
            port=port.getHost(),
            error=error,
        )
        return False
    return True


@implementer(IStreamServerEndpoint)
class FastOpenEndpoint:
    """
    A server endpoint whose listening socket gets C{TCP_FASTOPEN} with a
    queue length, so clients may carry data in their SYN (a SOCKS6 client's
    request, say); see L{setFastOpen}.
    """

    def __init__(self, endpoint: Any, queue: int) -> None:
        self._endpoint = endpoint
        self._queue = queue

    def listen(self, factory: Any) -> Any:
        def setOption(port: Any) -> Any:
            setFastOpen(port, self._queue)
            return port

        return self._endpoint.listen(factory).addCallback(setOption)


class StartupError(Exception):
    """
    socksd cannot start (a port already in use, say): one line for the
    operator, with no traceback (see L{reportStartupErrors}).
    """


def explainListenError(description: str, error: Any) -> str:
    """
    The one line that tells why listening on C{description} failed, from
    Twisted's C{CannotListenError}: C{127.0.0.1:1080 is already in use}.
    """
    import errno

    host = getattr(error, "interface", "") or "*"
    port = getattr(error, "port", "")
    where = f"{host}:{port}" if port not in ("", None) else str(host)
    if isinstance(port, str) and port.startswith("/"):
        where = port
    cause = getattr(error, "socketError", None)
    number = getattr(cause, "errno", None)
    if number is None and cause is not None and getattr(cause, "args", None):
        first = cause.args[0]
        number = first if isinstance(first, int) else None
    if number == errno.EADDRINUSE:
        why = f"{where} is already in use"
    elif number in (errno.EACCES, errno.EPERM):
        why = (
            f"{where}: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE)"
        )
    elif number == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this host"
    else:
        text = getattr(cause, "strerror", None) or str(cause or error)
        why = f"{where}: {text}"
    return f"cannot listen on {description}: {why}"


def reportStartupErrors() -> None:
    """
    Make an uncaught L{StartupError} end the program with its one line on
    standard error (and status 1), not a traceback: under C{twistd -n} the
    error of a service's start goes up to the top.  (Daemonized, twistd
    reports the error itself, through its status pipe.)
    """
    import sys

    previous = sys.excepthook
    if getattr(previous, "socksdStartupHook", False):
        return

    def hook(kind: Any, value: BaseException, traceback: Any) -> None:
        if isinstance(value, StartupError):
            sys.stderr.write(f"twistd socksd: error: {value}\n")
        else:
            previous(kind, value, traceback)

    hook.socksdStartupHook = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def listeningService(
    description: str, endpoint: IStreamServerEndpoint, factory: Any
) -> Any:
    """
    A service listening on C{endpoint} with C{factory}, started at once
    (as C{strports.service} does), whose failure to listen is a
    L{StartupError} that names C{description} and the reason.
    """
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.error import CannotListenError

    class Listening(StreamServerEndpointService):
        def privilegedStartService(self) -> None:
            try:
                super().privilegedStartService()
            except CannotListenError as error:
                reportStartupErrors()
                message = explainListenError(description, error)
                log.error("{message}", message=message)
                raise StartupError(message) from None

    service = Listening(endpoint, factory)
    service._raiseSynchronously = True
    return service


#: The formats of the events Twisted's accept loop logs for a connection it
#: could not accept, and the error each one stands for (L{None}: the
#: event's C{acceptError} names it).
_FAILED_ACCEPTS = {
    "EMFILE recovery: Closed socket from {address}": "EMFILE",
    "Could not accept new connection ({acceptError})": None,
}

#: The formats of its other events about the same episode, which say nothing
#: the count does not.
_QUIET = frozenset(
    {
        "EMFILE encountered; releasing reserved file descriptor.",
        "Re-reserving EMFILE recovery file descriptor.",
    }
)

_ADVICE = {
    "EMFILE": "out of file descriptors: raise the open-file limit (ulimit -n, "
    "LimitNOFILE=) or lower --max-connections",
    "ENFILE": "the system is out of file descriptors (fs.file-max)",
    "ENOBUFS": "out of socket buffers",
    "ENOMEM": "out of memory",
}


class AcceptErrors:
    """
    The observer of the accept loops of socksd's listening ports
    (L{watch}): connections they could not accept are counted, reported in
    one log line per C{interval} seconds at most (the first at once), and
    counted in the metrics' C{socksd_accept_errors_total}; other events go
    on to the global log publisher unchanged.

    Twisted's port, out of descriptors, closes each new connection at once
    (with the descriptor it keeps in reserve for this) and logs it: a
    connection is counted for each (C{EMFILE}), or for each C{accept()}
    that failed otherwise (with its error).  It goes on accepting as soon
    as descriptors are free again.

    @ivar metrics: a L{socksd.service.metrics.Metrics} told of each
        connection not accepted, or L{None}.
    @ivar total: the connections not accepted so far, by error name.
    """

    def __init__(
        self, reactor: Any, interval: float = 1.0, publisher: Any = None
    ) -> None:
        """
        @param reactor: an C{IReactorTime}.
        @param interval: the shortest time between two log lines.
        @param publisher: where other events go; the global log publisher
            by default.
        """
        self.metrics: Any = None
        self.total: Counter[str] = Counter()
        self._reactor = reactor
        self._interval = interval
        self._publisher = publisher if publisher is not None else globalLogPublisher
        self._pending: Counter[str] = Counter()
        self._since: float | None = None
        self._lastLine: float | None = None
        self._call: Any = None

    def watch(self, port: Any) -> Any:
        """
        Have the listening C{port}'s accept loop report here (Twisted's
        TCP and UNIX ports; others are left alone).

        @return: C{port}.
        """
        redirectAcceptLog(port, self)
        return port

    def __call__(self, event: dict[str, Any]) -> None:
        """See C{ILogObserver}."""
        format = event.get("log_format")
        if format in _FAILED_ACCEPTS:
            error = _FAILED_ACCEPTS[format] or str(event.get("acceptError", "unknown"))
            self._failed(error)
        elif format not in _QUIET:
            self._publisher(event)

    def _failed(self, error: str) -> None:
        self.total[error] += 1
        metrics = self.metrics
        if metrics is not None:
            try:
                metrics.acceptFailed(error)
            except Exception:
                log.failure("counting a connection not accepted failed")
        now = self._reactor.seconds()
        if not self._pending:
            self._since = now
        self._pending[error] += 1
        if self._call is not None:
            return
        if self._lastLine is None or now - self._lastLine >= self._interval:
            self._report()
        else:
            self._call = self._reactor.callLater(
                self._lastLine + self._interval - now, self._report
            )

    def _report(self) -> None:
        """Log the connections not accepted since the last line."""
        self._call = None
        pending, self._pending = self._pending, Counter()
        if not pending:
            return
        now = self._reactor.seconds()
        self._lastLine = now
        since = self._since if self._since is not None else now
        errors = ", ".join(f"{name} {count}" for name, count in sorted(pending.items()))
        advice = "; ".join(_ADVICE[name] for name in sorted(pending) if name in _ADVICE)
        log.warn(
            "could not accept {count} connection(s) in {seconds:.1f} s ({errors})"
            "{advice}",
            count=sum(pending.values()),
            seconds=max(0.0, now - since),
            errors=errors,
            advice=f": {advice}" if advice else "",
            acceptErrors=dict(pending),
        )

    def stop(self) -> None:
        """Report what is still counted, now; no later line is due."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._report()


@implementer(IStreamServerEndpoint)
class ReportingEndpoint:
    """
    A server endpoint whose listening ports report the connections they
    could not accept to an L{AcceptErrors}.

    @ivar endpoint: the endpoint that listens.
    """

    def __init__(self, endpoint: Any, errors: AcceptErrors) -> None:
        self.endpoint = endpoint
        self._errors = errors

    def listen(self, factory: Any) -> Any:
        """Listen with L{endpoint}; the port reports to the L{AcceptErrors}."""
        return self.endpoint.listen(factory).addCallback(self._errors.watch)
