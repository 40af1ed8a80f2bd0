"""
How socksd listens: the listen backlog it asks for (L{withBacklog}), and
C{TCP_FASTOPEN} on the listening sockets (L{FastOpenEndpoint} and
L{setFastOpen}, for C{--tcp-fastopen}; with C{--workers}, the parent sets it
on the sockets it shares).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["LISTEN_BACKLOG", "withBacklog", "FastOpenEndpoint", "setFastOpen"]

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
