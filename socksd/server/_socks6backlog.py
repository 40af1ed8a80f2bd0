"""
SOCKS6 BIND with a Listen Backlog (draft-11, the TCP Listen Backlog stack
option; draft-05 slides "TCP Reverse Proxy"): a BIND that keeps listening.

A BIND request inside a session with a Listen Backlog option (proxy-remote
leg, backlog above 0) makes the proxy listen with that backlog (capped at
L{MAX_BACKLOG}; the Operation Reply's Listen Backlog option says the
backlog used) for as long as that first connection stays open.  The first
connection relays nothing: its Operation Reply gives the listening address
and port, and bytes the client sends on it are discarded.

Each further BIND request of the same session naming that address and port
takes the next connection: its first Operation Reply gives the listening
address, its second the peer that connected, then the relay (as a plain
BIND's, L{socksd.server.bind.BindWaiting}).  Connections that arrive while
no such BIND waits stay in the kernel's accept queue, whose length is the
backlog: the listening port accepts only while a BIND waits (so a full
queue makes the kernel refuse or drop further connection attempts, as for
any server).  BINDs waiting at once are served in order.
"""

from __future__ import annotations

from collections import deque
from ipaddress import ip_address
from typing import Any

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import NotAllowed
from socksd.interfaces import ConnectContext
from socksd.replies import successFor
from socksd.server.bind import BindWaiting
from socksd.server.relay import boundDestination
from socksd.wire.socks6 import ListenBacklogOption, StackLeg

__all__ = [
    "MAX_BACKLOG",
    "BacklogListener",
    "requestedBacklog",
    "serveBacklogBind",
    "serveFurtherBind",
]

log = Logger()

#: The largest backlog socksd uses (Linux's default C{somaxconn} is 4096;
#: a SOCKS client has no need for more).
MAX_BACKLOG = 128


def requestedBacklog(request: Any) -> int:
    """
    @return: the backlog the request's Listen Backlog option asks for on
        the proxy-remote leg, or 0.
    """
    for option in request.stackOptions:
        if isinstance(option, ListenBacklogOption) and option.appliesToRemote:
            return option.backlog
    return 0


class BacklogListener(Factory):
    """
    The listening port of a BIND with a backlog, and the BINDs of the
    session waiting for its connections.

    @ivar port: the listening port.
    @ivar bound: the address and port it listens on.
    @ivar waiting: the L{BindWaiting} handlers, in the order they came.
    """

    noisy = False

    def __init__(self, session: Any) -> None:
        self.session = session
        self.port: Any = None
        self.bound: Destination | None = None
        self.waiting: deque[BindWaiting] = deque()
        self.closed = False

    def listen(self, reactor: Any, host: str, backlog: int) -> Destination:
        """Listen on C{host} with C{backlog}, accepting nothing yet."""
        self.port = reactor.listenTCP(0, self, backlog=backlog, interface=host)
        self.port.stopReading()
        self.bound = boundDestination(self.port.getHost())
        return self.bound

    def close(self) -> None:
        """Stop listening; fail the BINDs still waiting."""
        if self.closed:
            return
        self.closed = True
        if self.session.listeners.get(self.bound) is self:
            del self.session.listeners[self.bound]
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()
        while self.waiting:
            waiting = self.waiting.popleft()
            if not waiting.finished:
                waiting.fail(
                    ConnectionAbortedError("the listening BIND ended"),
                    "the listening BIND ended",
                )

    def _prune(self) -> None:
        while self.waiting and (
            self.waiting[0].finished or not self.waiting[0].connection.connected
        ):
            self.waiting.popleft()

    def _acceptOne(self) -> None:
        """Accept one connection when a BIND waits, else none."""
        self._prune()
        if self.port is None:
            return
        if self.waiting:
            # One accept per readiness, so the others stay queued.
            self.port.numberAccepts = 1
            self.port.startReading()
        else:
            self.port.stopReading()

    def wait(self, waiting: BindWaiting) -> None:
        """Give the next connection to C{waiting}."""
        self.waiting.append(waiting)
        self._acceptOne()

    def buildProtocol(self, addr: Any) -> Any:
        """The next connection goes to the first BIND still waiting."""
        self._prune()
        protocol = None
        if self.waiting:
            protocol = self.waiting.popleft().incoming(addr)
        self._acceptOne()
        return protocol


class _Control:
    """
    The handler of the first connection of a BIND with a backlog: it only
    keeps the listener open.
    """

    def __init__(self, connection: Any, listener: BacklogListener) -> None:
        self.connection = connection
        self.listener = listener

    def dataReceived(self, data: bytes) -> None:
        """Discard: this connection relays nothing."""

    def readConnectionLost(self) -> None:
        """The client ended: so does the listening."""
        self.connection.finish("client ended the listening BIND")

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure) -> None:
        """Stop listening."""
        self.listener.close()


def _allowedHost(
    handler: Any, destination: Destination, context: ConnectContext
) -> str | None:
    """
    Check the policy (command BIND) as L{socksd.server.bind.serveBind}
    does, and find the address to listen on.

    @return: the host, or L{None} after refusing the request.
    """
    connection = handler.connection
    factory = connection.factory
    if handler.allowedBy(destination, context, "BIND") is None:
        return None
    host = factory.config.bindAddress
    if host is None:
        host = getattr(connection.transport.getHost(), "host", None)
    try:
        ip_address(str(host).partition("%")[0])
    except ValueError:
        handler.refuse(
            NotAllowed("BIND needs an IP listener"),
            "BIND refused: the client did not come in over IP",
        )
        return None
    return str(host)


def serveBacklogBind(
    handler: Any, backlog: int, destination: Destination, context: ConnectContext
) -> None:
    """
    The first BIND with a backlog, for C{handler} (a
    L{socksd.server.socks6.Socks6Handler} in a session): listen, reply with
    the address and the backlog used, keep listening while the connection
    lasts.
    """
    host = _allowedHost(handler, destination, context)
    if host is None:
        return
    connection = handler.connection
    session = handler.session
    used = min(backlog, MAX_BACKLOG)
    listener = BacklogListener(session)
    try:
        bound = listener.listen(connection.factory.reactor, host, used)
    except Exception as error:
        handler.refuse(error, f"BIND could not listen on {host}: {error}")
        return
    session.listeners[bound] = listener
    handler._stackReplies = tuple(
        (
            ListenBacklogOption(StackLeg.PROXY_REMOTE, used)
            if isinstance(option, ListenBacklogOption)
            else option
        )
        for option in handler._stackReplies
    )
    handler._early = None
    connection.handler = _Control(connection, listener)
    code = successFor(handler.profile)
    connection.record.reply = code
    connection.transport.write(handler.buildReply(code, bound))


def serveFurtherBind(
    handler: Any,
    listener: BacklogListener,
    destination: Destination,
    context: ConnectContext,
) -> None:
    """
    A further BIND of the session to C{listener}'s address: the first
    reply now, the second when the next connection is accepted.
    """
    if _allowedHost(handler, destination, context) is None:
        return
    connection = handler.connection
    waiting = BindWaiting(handler, None)
    connection.handler = waiting
    code = successFor(handler.profile)
    connection.transport.write(handler.buildReply(code, listener.bound))
    factory = connection.factory
    timeout = factory.config.bindTimeout
    if timeout is not None:
        waiting._timer = factory.reactor.callLater(timeout, waiting._timedOut)
    listener.wait(waiting)
