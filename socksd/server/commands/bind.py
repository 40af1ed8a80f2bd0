"""
BIND, for SOCKS4, SOCKS5 and SOCKS6: the proxy listens for one connection
and relays it.

L{Bind} listens on the address of the interface the client came in on (or
C{ServerConfig.bindAddress}; L{bindHost} is the one choice every version
shares), any port, sends the first reply with that address and port, and
waits for a peer:

  - SOCKS4 and SOCKS5: the peer must come from the request's DST.ADDR (the
    expected peer; the unspecified address 0.0.0.0 or :: accepts any, and
    a domain name accepts any of its addresses, resolved with the
    factory's resolver).  Only the address is compared: the port a peer
    connects from is its own choice.  A peer from another address is
    refused, and the BIND fails with a second reply reporting the failure
    (as the SOCKS4 protocol prescribes, and as RFC 1928's "reply fields
    indicate the failure" allows), so a client is never left waiting on a
    connection that an intruder took;
  - SOCKS6: the address and port are the I{wanted bind address}, not an
    expected peer, so any peer is accepted.  They are honoured
    (L{wantedAddress}): the unspecified address means the usual one, port 0
    any port; another address must be one of the proxy's own (a loopback
    one only for a client on loopback; only C{bindAddress} when it is set)
    or the request is refused (02), a name is refused (08).  The policy
    decides on the address and port that will be used, as a wanted bind
    address (C{ConnectContext.bindRequest}).  Inside a session, a Listen
    Backlog option makes a BIND that keeps listening (L{BacklogListener}),
    and further BINDs of the session to its address take its connections
    one by one;
  - the first connection is the only one: the listening port is closed as
    soon as it arrives;
  - after C{ServerConfig.bindTimeout} seconds with no connection, the client
    gets a failure reply (TTL expired for SOCKS5, 91 for SOCKS4);
  - a client that sends EOF while its BIND waits for the peer waits for
    nothing: the BIND ends at once (the listening socket is closed, and so
    is the client's connection);
  - one client address may have C{ServerConfig.maxPendingBindsPerClient}
    BINDs waiting for their peer at once (32 by default); one more gets a
    failure reply (general failure, 91 for SOCKS4);
  - the second reply carries the peer's address and port, then the relay
    joins the two connections.  Bytes the client sent while waiting reach
    the peer first.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination, hostAddress
from socksd.errors import (
    ConnectTimeout,
    GeneralFailure,
    NotAllowed,
    UnsupportedAddressType,
)
from socksd.interfaces import ConnectContext, Decision
from socksd.server.commands._base import Command
from socksd.server.limits import clientKey
from socksd.server.relay import UpstreamProtocol, abortTransport, boundDestination
from socksd.server.relay._transport import acceptOneAtATime, stopAccepting
from socksd.server.socks6.stack import applyStackOptions
from socksd.wire.socks6 import ListenBacklogOption, StackLeg

__all__ = [
    "Bind",
    "BindListener",
    "BacklogListener",
    "bindHost",
    "wantedAddress",
    "wantedDestination",
    "listenRefusal",
    "isLocalAddress",
    "MAX_BACKLOG",
]

log = Logger()

#: The largest backlog socksd uses (Linux's default C{somaxconn} is 4096;
#: a SOCKS client has no need for more).
MAX_BACKLOG = 128


def bindHost(pipeline: Any) -> str | None:
    """
    The address a BIND listens on: C{ServerConfig.bindAddress}, else the
    address of the interface the client came in on.  When that is not an
    IP address (a UNIX socket), refuse the request.

    @return: the host, or L{None} after refusing.
    """
    connection = pipeline.connection
    host = pipeline.factory.config.bindAddress
    if host is None:
        host = getattr(connection.transport.getHost(), "host", None)
    try:
        ip_address(str(host).partition("%")[0])
    except ValueError:
        pipeline.refuse(
            NotAllowed("BIND needs an IP listener"),
            "BIND refused: the client did not come in over IP",
        )
        return None
    return str(host)


def isLocalAddress(address: IPv4Address | IPv6Address) -> bool:
    """
    Whether C{address} is one of this host's own: the system lets a socket
    bind to it.
    """
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _defaultHost(pipeline: Any, pinned: str | None) -> str | None:
    """The address used when none is wanted, without refusing anything."""
    if pinned is not None:
        return pinned
    return getattr(pipeline.connection.transport.getHost(), "host", None)


def wantedDestination(pipeline: Any, pinned: str | None = None) -> Destination:
    """
    The address and port a SOCKS6 BIND or UDP ASSOCIATE will use, for the
    policy: the wanted ones, the unspecified address replaced by the usual
    one (C{pinned}, else the interface the client came in on).
    """
    wanted = pipeline.request.destination
    host = wanted.host
    if isinstance(host, (IPv4Address, IPv6Address)) and host.is_unspecified:
        default = hostAddress(_defaultHost(pipeline, pinned))
        if default is not None:
            return Destination(default, wanted.port)
    return wanted


def wantedAddress(
    pipeline: Any, default: str, what: str, pinned: str | None = None
) -> tuple[str, int] | None:
    """
    The wanted bind address of a SOCKS6 BIND or UDP ASSOCIATE, checked.

    Which addresses a client may have the proxy listen on is the proxy's
    to decide: its own only.  The unspecified address (0.0.0.0 or ::)
    means C{default}; another address must be one of this host's
    (L{isLocalAddress}), not multicast, and a loopback one only for a
    client that came in over loopback (a client from elsewhere could
    otherwise pose as a local service to the proxy's own programs); with
    C{pinned} (C{--bind-address}), only that one.  A refused address gets
    "not allowed" (02), a name "address type not supported" (08).  The
    port is the wanted one (0: any).

    @param default: the address used when none is wanted.
    @param what: the command, for the log ("BIND", "UDP ASSOCIATE").
    @return: the host and port, or L{None} after refusing.
    """
    wanted = pipeline.request.destination
    host = wanted.host
    if isinstance(host, str):
        pipeline.refuse(
            UnsupportedAddressType(
                f"a wanted bind address is an IP address, not the name {host!r}",
                addressType=3,
            ),
            f"{what} refused: the wanted bind address is a name",
        )
        return None
    address = hostAddress(host)
    if host.is_unspecified or address is None or address == hostAddress(default):
        return default, wanted.port
    refusal = None
    if pinned is not None:
        refusal = f"{what} listens on {pinned} only"
    elif address.is_multicast:
        refusal = f"{address} is a multicast address"
    elif address.is_loopback and not getattr(
        hostAddress(getattr(pipeline.connection.transport.getPeer(), "host", None)),
        "is_loopback",
        False,
    ):
        refusal = f"{address} is a loopback address and the client is not local"
    elif not isLocalAddress(address):
        refusal = f"{address} is not an address of this proxy"
    if refusal is not None:
        pipeline.refuse(NotAllowed(refusal), f"{what} refused: {refusal}")
        return None
    return str(address), wanted.port


def listenRefusal(error: BaseException, host: str, port: int) -> BaseException:
    """
    The failure a client is told when listening on C{host}:C{port} failed:
    "not allowed" (02) for an address that is not the proxy's or a port it
    may not take, else the error itself (a port in use: 01).
    """
    socketError = getattr(error, "socketError", error)
    code = getattr(socketError, "errno", None)
    if code == errno.EADDRNOTAVAIL:
        return NotAllowed(f"{host} is not an address of this proxy")
    if code == errno.EACCES:
        return NotAllowed(f"port {port} needs privileges socksd does not have")
    if code == errno.EADDRINUSE:
        return GeneralFailure(f"port {port} of {host} is in use")
    return error


def _requestedBacklog(request: Any) -> int:
    """
    @return: the backlog a SOCKS6 request's Listen Backlog option asks for
        on the proxy-remote leg, or 0.
    """
    if request.socks6 is None:
        return 0
    for option in request.socks6.stackOptions:
        if isinstance(option, ListenBacklogOption) and option.appliesToRemote:
            return option.backlog
    return 0


class _BoundProtocol(UpstreamProtocol):
    """The peer's connection: tells its L{Bind} when it is made."""

    __slots__ = ("bind",)

    def __init__(self, bind: Bind) -> None:
        super().__init__()
        self.bind = bind

    def connectionMade(self) -> None:
        self.bind.peerConnected(self)


class BindListener(Factory):
    """
    The listening side of one BIND: the first connection goes to the
    L{Bind}; every later one is refused.
    """

    noisy = False

    def __init__(self, bind: Bind) -> None:
        self.bind = bind

    def buildProtocol(self, addr: Any) -> _BoundProtocol | None:
        """Accept the expected peer, once; refuse anyone else."""
        return self.bind.incoming(addr)


class Bind(Command):
    """
    BIND: see the module docstring.

    @ivar expected: the addresses the peer may come from; L{None}: any.
    @ivar finished: the BIND has succeeded or failed.
    """

    policyCheck = "BIND"

    __slots__ = (
        "expected",
        "finished",
        "_options",
        "_resolving",
        "_port",
        "_timer",
        "_peer",
        "_listener",
        "_pending",
    )

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self.expected: frozenset[Any] | None = None
        self.finished = False
        self._options: tuple[Any, ...] = ()
        self._resolving: Any = None
        self._port: Any = None
        self._timer: Any = None
        self._peer: _BoundProtocol | None = None
        self._listener: BacklogListener | None = None
        #: The client key counted in the factory's pendingBinds, or None.
        self._pending: Any = None

    @property
    def connection(self) -> Any:
        """The client's connection."""
        return self.pipeline.connection

    def _listening(self) -> BacklogListener | None:
        """The session's open listener for the wanted address, if any."""
        request = self.pipeline.request
        session = request.session
        if session is None:
            return None
        listener = session.listeners.get(request.destination)
        if listener is None or listener.closed:
            return None
        return listener

    def _backlog(self) -> int:
        """The backlog a SOCKS6 request in a session asks for, or 0."""
        request = self.pipeline.request
        if request.session is None:
            return 0
        return _requestedBacklog(request)

    def policyDestination(self) -> Destination:
        """
        SOCKS4 and SOCKS5: the expected peer.  SOCKS6: the wanted bind
        address, the unspecified address replaced by the one BIND would use
        (L{wantedDestination}).
        """
        request = self.pipeline.request
        if request.version == 6 and self._listening() is None:
            return wantedDestination(
                self.pipeline, self.pipeline.factory.config.bindAddress
            )
        return request.destination

    def policyContext(self, context: ConnectContext) -> ConnectContext:
        """SOCKS6: the destination is a wanted bind address."""
        if self.pipeline.request.version == 6:
            return context._replace(bindRequest=True)
        return context

    def start(self, decision: Decision) -> None:
        """Listen (or join a session's listener), then wait for the peer."""
        pipeline = self.pipeline
        request = pipeline.request
        if pipeline.clientEnded:
            # The request came with the client's EOF: nobody waits for a
            # peer.
            self.finished = True
            self.connection.finish("client sent EOF before the BIND was up")
            return
        if request.version == 6:
            self._options = applyStackOptions(
                request.socks6.stackOptions,
                None,
                request.destination,
                pipeline.factory.upstream,
            )
        host = bindHost(pipeline)
        if host is None:
            return
        if request.version == 6:
            listener = self._listening()
            if listener is not None:
                self._waitOn(listener)
                return
            wanted = wantedAddress(
                pipeline, host, "BIND", pipeline.factory.config.bindAddress
            )
            if wanted is None:
                return
            host, port = wanted
            backlog = self._backlog()
            if backlog > 0:
                self._listenWithBacklog(host, backlog, port)
                return
            self.listen(host, port)
            return
        expected = request.destination.host
        if isinstance(expected, str):
            resolving = maybeDeferred(pipeline.factory.resolver.resolve, expected)
            self._resolving = resolving

            def resolved(addresses: list[Any]) -> None:
                self._resolving = None
                if not self.finished:
                    self.expected = frozenset(addresses)
                    self.listen(host)

            def failed(failure: Failure) -> None:
                self._resolving = None
                if not self.finished:
                    self.fail(
                        failure,
                        f"BIND peer name not resolved: {failure.getErrorMessage()}",
                    )

            resolving.addCallbacks(resolved, failed)
            resolving.addErrback(self.bug)
            return
        if not expected.is_unspecified:
            self.expected = frozenset([expected])
        self.listen(host)

    def listen(self, host: str, port: int = 0) -> None:
        """
        Listen on C{host} (and C{port}, 0 for any), send the first reply,
        and start the timer.
        """
        factory = self.pipeline.factory
        if not self._claimPending():
            return
        try:
            self._port = factory.reactor.listenTCP(
                port, BindListener(self), interface=host
            )
        except Exception as error:
            self.fail(
                listenRefusal(error, host, port),
                f"BIND could not listen on {host}: {error}",
            )
            return
        self.pipeline.sendSuccess(
            boundDestination(self._port.getHost()), self._options, now=False
        )
        self._startTimer()

    def _startTimer(self) -> None:
        factory = self.pipeline.factory
        timeout = factory.config.bindTimeout
        if timeout is not None:
            self._timer = factory.reactor.callLater(timeout, self._timedOut)

    def _claimPending(self) -> bool:
        """
        Count this BIND among its client address's pending ones; when that
        address has C{maxPendingBindsPerClient} already, refuse instead.

        @return: C{False} after refusing.
        """
        factory = self.pipeline.factory
        cap = factory.config.maxPendingBindsPerClient
        table = factory.pendingBinds
        if table is None:
            table = factory.pendingBinds = {}
        key = clientKey(self.connection.record.client)
        held = table.get(key, 0)
        if cap is not None and held >= cap:
            self.fail(
                GeneralFailure(f"too many pending BINDs from this client ({cap})"),
                f"too many pending BINDs from this client ({cap})",
            )
            return False
        table[key] = held + 1
        self._pending = key
        return True

    def _releasePending(self) -> None:
        """This BIND waits no more: count it out."""
        key, self._pending = self._pending, None
        if key is None:
            return
        table = self.pipeline.factory.pendingBinds
        left = table.get(key, 0) - 1
        if left > 0:
            table[key] = left
        else:
            table.pop(key, None)

    def _stopListening(self) -> None:
        self._releasePending()
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()

    def fail(self, error: BaseException | Failure, reason: str) -> None:
        """End the BIND with the failure reply for C{error}."""
        self.finished = True
        self._stopListening()
        self.pipeline.refuse(error, reason)

    def bug(self, failure: Failure) -> None:
        """A bug in a callback: log it and drop the client."""
        self.finished = True
        self._stopListening()
        self.connection.bug("serving a BIND failed", failure)

    def _timedOut(self) -> None:
        self._timer = None
        if not self.finished:
            self.fail(
                ConnectTimeout("no peer connected to the BIND in time"),
                "BIND timed out",
            )

    def incoming(self, addr: Any) -> _BoundProtocol | None:
        """A connection arrived on the BIND port: see the module docstring."""
        if self.finished:
            return None
        peer = hostAddress(getattr(addr, "host", ""))
        if self.expected is not None and peer not in self.expected:
            log.warn(
                "BIND from {client}: refused a connection from {peer}, "
                "not the expected peer",
                client=self.connection.record.client,
                peer=addr,
            )
            self.fail(
                NotAllowed("the BIND peer is not the expected one"),
                f"BIND refused an unexpected peer {peer}",
            )
            return None
        self.finished = True
        self._stopListening()
        self._peer = _BoundProtocol(self)
        return self._peer

    def peerConnected(self, peer: _BoundProtocol) -> None:
        """Send the second reply, then relay."""
        self._peer = None
        if not self.connection.open:
            abortTransport(peer.transport)
            return
        self.pipeline.startTunnel(
            peer,
            boundDestination(peer.transport.getPeer()),
            self._options,
            splice=False,
        )

    def readConnectionLost(self) -> None:
        """
        The client sent EOF while its BIND waits for the peer: nobody
        waits for it any more; end it, and close the client, now.
        """
        if self.finished:
            return
        self.connection.finish("client sent EOF while waiting for the BIND peer")
        self.stop()

    def stop(self) -> None:
        """The client left: stop listening, and drop a peer not yet relayed."""
        if not self.finished:
            self.connection.record.setReason(
                "client closed while waiting for the BIND peer"
            )
        self.finished = True
        resolving, self._resolving = self._resolving, None
        if resolving is not None:
            resolving.cancel()
        self._stopListening()
        peer, self._peer = self._peer, None
        if peer is not None and peer.transport is not None and peer.connected:
            abortTransport(peer.transport)
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    # SOCKS6 listening BINDs

    def _listenWithBacklog(self, host: str, backlog: int, port: int = 0) -> None:
        """
        The first BIND with a backlog (in a session): listen, reply with
        the address and the backlog used, keep listening while the
        connection lasts.
        """
        pipeline = self.pipeline
        used = min(backlog, MAX_BACKLOG)
        listener = BacklogListener(pipeline.request.session)
        try:
            bound = listener.listen(pipeline.factory.reactor, host, used, port)
        except Exception as error:
            pipeline.refuse(
                listenRefusal(error, host, port),
                f"BIND could not listen on {host}: {error}",
            )
            return
        self.finished = True
        self._listener = listener
        listener.session.listeners[bound] = listener
        options = tuple(
            (
                ListenBacklogOption(StackLeg.PROXY_REMOTE, used)
                if isinstance(option, ListenBacklogOption)
                else option
            )
            for option in self._options
        )
        pipeline.handOver(_Control(self.connection, listener))
        pipeline.sendSuccess(bound, options, now=False)

    def _waitOn(self, listener: BacklogListener) -> None:
        """
        A further BIND of the session to C{listener}'s address: the first
        reply now, the second when the next connection is accepted.
        """
        if not self._claimPending():
            return
        self.pipeline.sendSuccess(listener.bound, self._options, now=False)
        self._startTimer()
        listener.wait(self)


class _Control:
    """
    The handler of the first connection of a BIND with a backlog: it only
    keeps the listener open.
    """

    __slots__ = ("connection", "listener")

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


class BacklogListener(Factory):
    """
    The listening port of a SOCKS6 BIND with a backlog, and the BINDs of
    the session waiting for its connections.

    @ivar session: the session whose listener this is.
    @ivar port: the listening port.
    @ivar bound: the address and port it listens on.
    @ivar waiting: the L{Bind} commands waiting, in the order they came.
    """

    noisy = False

    def __init__(self, session: Any) -> None:
        self.session = session
        self.port: Any = None
        self.bound: Destination | None = None
        self.waiting: deque[Bind] = deque()
        self.closed = False

    def listen(
        self, reactor: Any, host: str, backlog: int, port: int = 0
    ) -> Destination:
        """
        Listen on C{host} (and C{port}, 0 for any) with C{backlog},
        accepting nothing yet.
        """
        self.port = reactor.listenTCP(port, self, backlog=backlog, interface=host)
        stopAccepting(self.port)
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
            acceptOneAtATime(self.port)
        else:
            stopAccepting(self.port)

    def wait(self, bind: Bind) -> None:
        """Give the next connection to C{bind}."""
        self.waiting.append(bind)
        self._acceptOne()

    def buildProtocol(self, addr: Any) -> Any:
        """The next connection goes to the first BIND still waiting."""
        self._prune()
        protocol = None
        if self.waiting:
            protocol = self.waiting.popleft().incoming(addr)
        self._acceptOne()
        return protocol
