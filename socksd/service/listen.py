"""
How socksd listens: the listen backlog it asks for (L{withBacklog}),
C{TCP_FASTOPEN} on the listening sockets (L{FastOpenEndpoint} and
L{setFastOpen}, for C{--tcp-fastopen}; with C{--workers}, the parent sets it
on the sockets it shares), and a failure to listen told in one line
(L{listeningService}, L{StartupError}).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "LISTEN_BACKLOG",
    "withBacklog",
    "FastOpenEndpoint",
    "setFastOpen",
    "StartupError",
    "explainListenError",
    "listeningService",
    "reportStartupErrors",
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
