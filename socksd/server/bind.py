"""
BIND, for SOCKS4 and SOCKS5: the proxy listens for one connection from the
peer the client named, and relays it.

L{serveBind} is the C{bind} method of the SOCKS4 and SOCKS5 handlers' command
tables.  It checks the policy (command BIND), listens on the address of the
interface the client came in on (or C{ServerConfig.bindAddress}), sends the
first reply with that address and port, and hands the client's connection to
a L{BindWaiting} handler until a peer connects:

  - the peer must come from the request's DST.ADDR (the expected peer; the
    unspecified address 0.0.0.0 or :: accepts any, and a domain name accepts
    any of its addresses, resolved with the factory's resolver).  Only the
    address is compared: the port a peer connects from is its own choice;
  - the first connection is the only one: the listening port is closed as
    soon as it arrives.  A peer from another address is refused, and the
    BIND fails with a second reply reporting the failure (as the SOCKS4
    protocol prescribes, and as RFC 1928's "reply fields indicate the
    failure" allows), so a client is never left waiting on a connection
    that an intruder took;
  - after C{ServerConfig.bindTimeout} seconds with no connection, the client
    gets a failure reply (TTL expired for SOCKS5, 91 for SOCKS4);
  - the second reply carries the peer's address and port, then the relay
    (L{socksd.server.relay.startRelay}) joins the two connections.  Bytes
    the client sent while waiting reach the peer first.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import ConnectTimeout, NotAllowed
from socksd.interfaces import ConnectContext
from socksd.replies import successFor
from socksd.server.relay import (
    UpstreamProtocol,
    abortTransport,
    boundDestination,
    startRelay,
)

__all__ = ["serveBind", "BindWaiting", "BindListener"]

log = Logger()


def serveBind(handler: Any, destination: Destination, context: ConnectContext) -> None:
    """
    Serve a BIND request for C{handler} (a L{socksd.server.dispatch.RequestHandler}).

    @param destination: the expected peer (DST.ADDR and DST.PORT).
    @param context: the request's context; its command is BIND.
    """
    connection = handler.connection
    factory = connection.factory
    if handler.allowedBy(destination, context, "BIND") is None:
        return
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
        return
    expected = destination.host
    if isinstance(expected, str):
        resolving = maybeDeferred(factory.resolver.resolve, expected)
        waiting = BindWaiting(handler, None)
        connection.handler = waiting
        waiting.resolving = resolving

        def resolved(addresses: list[Any]) -> None:
            waiting.resolving = None
            if not waiting.finished:
                waiting.expected = frozenset(addresses)
                waiting.listen(host)

        def failed(failure: Failure) -> None:
            waiting.resolving = None
            if not waiting.finished:
                waiting.fail(
                    failure, f"BIND peer name not resolved: {failure.getErrorMessage()}"
                )

        resolving.addCallbacks(resolved, failed)
        resolving.addErrback(waiting.bug)
        return
    anyPeer = expected.is_unspecified
    waiting = BindWaiting(handler, None if anyPeer else frozenset([expected]))
    connection.handler = waiting
    waiting.listen(host)


def _peerAddress(address: Any) -> Any:
    """The IP address of a Twisted C{IAddress}, or L{None}."""
    try:
        found = ip_address(str(getattr(address, "host", "")).partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(found, "ipv4_mapped", None)
    return mapped if mapped is not None else found


class _BoundProtocol(UpstreamProtocol):
    """The peer's connection: tells its L{BindWaiting} when it is made."""

    __slots__ = ("waiting",)

    def __init__(self, waiting: BindWaiting) -> None:
        super().__init__()
        self.waiting = waiting

    def connectionMade(self) -> None:
        self.waiting.peerConnected(self)


class BindListener(Factory):
    """
    The listening side of one BIND: the first connection goes to the
    L{BindWaiting}; every later one is refused.
    """

    noisy = False

    def __init__(self, waiting: BindWaiting) -> None:
        self.waiting = waiting

    def buildProtocol(self, addr: Any) -> _BoundProtocol | None:
        """Accept the expected peer, once; refuse anyone else."""
        return self.waiting.incoming(addr)


class BindWaiting:
    """
    The client connection's handler while a BIND waits for its peer: it
    keeps the client's bytes for the peer (pausing the client past
    C{maxOptimisticData}), remembers an EOF, and stops listening when the
    client leaves.

    @ivar handler: the request handler (replies, profile, record).
    @ivar expected: the addresses the peer may come from; L{None}: any.
    @ivar finished: the BIND has succeeded or failed.
    """

    def __init__(self, handler: Any, expected: frozenset[Any] | None) -> None:
        self.handler = handler
        self.connection = handler.connection
        self.expected = expected
        self.finished = False
        self.resolving: Any = None
        self.port: Any = None
        self._timer: Any = None
        early = getattr(handler, "_early", None)
        self._early: list[bytes] = list(early) if early else []
        self._earlySize = sum(len(data) for data in self._early)
        handler._early = None
        self._clientEnded = False
        self._peer: _BoundProtocol | None = None

    def listen(self, host: str) -> None:
        """Listen on C{host}, send the first reply, and start the timer."""
        connection = self.connection
        factory = connection.factory
        reactor = factory.reactor
        try:
            self.port = reactor.listenTCP(0, BindListener(self), interface=host)
        except Exception as error:
            self.fail(error, f"BIND could not listen on {host}: {error}")
            return
        bound = boundDestination(self.port.getHost())
        code = successFor(self.handler.profile)
        connection.transport.write(self.handler.buildReply(code, bound))
        timeout = factory.config.bindTimeout
        if timeout is not None:
            self._timer = reactor.callLater(timeout, self._timedOut)

    def _stopListening(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()

    def fail(self, error: BaseException | Failure, reason: str) -> None:
        """End the BIND with the failure reply for C{error}."""
        self.finished = True
        self._stopListening()
        self.handler.refuse(error, reason)

    def bug(self, failure: Failure) -> None:
        """A bug in a callback: log it and drop the client."""
        log.failure("serving a BIND failed", failure)
        self.finished = True
        self._stopListening()
        self.connection.abort("internal error: serving a BIND failed")

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
        peer = _peerAddress(addr)
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
        connection = self.connection
        if not connection.connected or connection.closing:
            abortTransport(peer.transport)
            return
        handler = self.handler
        code = successFor(handler.profile)
        record = connection.record
        record.reply = code
        connection.transport.write(
            handler.buildReply(code, boundDestination(peer.transport.getPeer()))
        )
        early = b"".join(self._early)
        self._early = []
        if not self._clientEnded:
            connection.resumeReading()
        config = connection.factory.config
        startRelay(
            connection,
            peer,
            connection.factory.reactor,
            initialData=early,
            clientEnded=self._clientEnded,
            idleTimeout=config.idleTimeout,
            noDelay=config.tcpNoDelay,
            record=record,
        )

    # The client connection's events, while waiting.

    def dataReceived(self, data: bytes) -> None:
        """Keep the client's bytes for the peer."""
        if not data:
            return
        self._early.append(data)
        self._earlySize += len(data)
        if self._earlySize >= self.connection.factory.config.maxOptimisticData:
            self.connection.pauseReading()

    def readConnectionLost(self) -> None:
        """Remember the EOF, for the peer after the kept bytes."""
        self._clientEnded = True

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure) -> None:
        """The client left: stop listening, and drop a peer not yet relayed."""
        if not self.finished:
            self.connection.record.setReason(
                "client closed while waiting for the BIND peer"
            )
        self.finished = True
        resolving, self.resolving = self.resolving, None
        if resolving is not None:
            resolving.cancel()
        self._stopListening()
        peer, self._peer = self._peer, None
        if peer is not None and peer.transport is not None and peer.connected:
            abortTransport(peer.transport)
