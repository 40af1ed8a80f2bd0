"""
One client connection: the first byte picks the protocol, a sans-IO
handshake negotiates, and the request pipeline serves the request.

The factory builds a L{SocksConnection} per connection.  Its first byte
picks an entry of the factory's C{handlers} mapping (0x04 SOCKS4/4A, 0x05
SOCKS5, 0x06 SOCKS6, the first letters of HTTP methods).  A byte no entry
claims gets SOCKS6's one-byte Version Mismatch reply (C{06}) before the
close when the port serves SOCKS6 (its mapping has an entry for 0x06), as
draft-11 says a proxy answers a request of another version; a port that
does not serve SOCKS6 closes without a byte, since C{06} would tell the
client to speak a version the port refuses (SOCKS4 and SOCKS5 have no such
reply: their servers close).  An entry is a callable that takes the
connection and returns its I{handler}, the object that gets every later
event of the connection (C{dataReceived(data)}, the first call with the
first byte; C{readConnectionLost()}; C{writeConnectionLost()};
C{connectionLost(reason)}).

For the protocols socksd speaks, the handler is a L{Negotiation}: it feeds
the bytes to the protocol's handshake (L{socksd.handshake}) and carries out
the actions it returns: it sends bytes, checks credentials with the
factory's authenticator, refuses, and once the request is ready hands the
connection to the request pipeline (L{socksd.server.pipeline.Pipeline}),
which then becomes the handler.  Once a tunnel is up, the relay's
direction objects take its place (L{socksd.server.relay}).

The connection keeps its L{ConnectionRecord} and sends its one log event
when it is gone (and, when the factory has an C{accessLog}, gives it the
record); it guards every entry point, so that no exception reaches the
reactor.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.errors import AuthenticationFailed
from socksd.handshake import (
    AcceptContext,
    AwaitSessions,
    CheckCredentials,
    Refuse,
    RequestReady,
    Send,
    ServerHandshake,
)
from socksd.handshake.socks5 import MAX_MESSAGE
from socksd.server._log import ConnectionRecord
from socksd.server.pipeline import Pipeline
from socksd.server.relay import abortTransport, setNoDelay, tcpTransports, writeNow
from socksd.wire.socks6 import VERSION as SOCKS6_VERSION
from socksd.wire.socks6 import Socks6ServerCodec, VersionMismatch

__all__ = ["SocksConnection", "Handler", "negotiating"]

log = Logger()

#: SOCKS6's Version Mismatch reply, as its codec writes it.
VERSION_MISMATCH = Socks6ServerCodec().send(VersionMismatch())


class Handler:
    """
    A base for handlers that serve a whole connection themselves (the
    factory's C{handlers} mapping may name such a class).

    @ivar connection: the L{SocksConnection}.
    """

    __slots__ = ("connection",)

    def __init__(self, connection: SocksConnection) -> None:
        self.connection = connection

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the client (the first call includes the first byte)."""
        raise NotImplementedError()

    def readConnectionLost(self) -> None:
        """The client sent EOF before its request was complete: close."""
        self.connection.finish("client sent EOF during the handshake")

    def writeConnectionLost(self) -> None:
        """Writing to the client was shut down."""

    def connectionLost(self, reason: Failure) -> None:
        """The client's connection is gone."""
        self.connection.record.setReason("client closed during the handshake")


class _Closing:
    """
    The handler of a connection that is closing: it ignores what still
    arrives; L{previous} is the handler that was in place (L{None}: the
    connection's own first-byte or negotiation stage), told when the
    connection is gone.
    """

    __slots__ = ("previous",)

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def dataReceived(self, data: bytes) -> None:
        pass

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


#: The handler of a connection that is gone.
_GONE = _Closing(None)


@implementer(IProtocol, IHalfCloseableProtocol)
class SocksConnection:
    """
    The protocol of one client connection; see the module docstring.

    Until its first byte, and while its handshake runs, the connection
    handles its events itself (its C{handler} is L{None}); then they go to
    its handler: the request's L{Pipeline}, a command's, or the relay's.

    @ivar factory: the L{socksd.server.SocksServerFactory}.
    @ivar transport: the client's transport.
    @ivar record: the connection's L{ConnectionRecord}.
    @ivar handler: where the connection's events go now, or L{None} while
        the connection handles them itself.
    @ivar handshake: the protocol's handshake, once the first byte chose
        one, else L{None}.
    @ivar closing: C{True} once L{finish} was called.
    @ivar admission: the connection's place in the factory's connection
        limits (L{socksd.server.limits.Admission}), or L{None}.
    """

    __slots__ = (
        "factory",
        "transport",
        "connected",
        "record",
        "handler",
        "handshake",
        "closing",
        "admission",
        "_timer",
        "_paused",
        "_checking",
        "_ended",
        "_fed",
    )

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.transport: Any = None
        self.connected = 0
        self.record: ConnectionRecord | None = None
        self.handler: Any = None
        self.handshake: ServerHandshake | None = None
        self.closing = False
        self.admission: Any = None
        self._timer: Any = None
        self._paused = False
        #: The credential check in progress, if any.
        self._checking: Deferred[Any] | None = None
        #: The client sent EOF during the handshake.
        self._ended = False
        #: Bytes fed to the handshake so far: only past the bound can it
        #: hold too many.
        self._fed = 0

    # IProtocol and IHalfCloseableProtocol

    def makeConnection(self, transport: Any) -> None:
        """See L{IProtocol.makeConnection}."""
        self.connected = 1
        self.transport = transport
        try:
            self.connectionMade()
        except Exception:
            self._crash("starting the connection failed")

    def connectionMade(self) -> None:
        """Check the client against the policy, and start the handshake timer."""
        factory = self.factory
        factory.connections.add(self)
        client = self.transport.getPeer()
        self.record = ConnectionRecord(client, factory.reactor.seconds())
        config = factory.config
        if config.tcpNoDelay:
            setNoDelay(self.transport)
        policy = factory.policy
        if policy is not None and not policy.allowClient(client):
            self.finish("client refused by policy")
            return
        limits = factory.limits
        if limits is not None:
            admission = limits.admit(client)
            if isinstance(admission, str):
                self.finish(admission)
                return
            self.admission = admission
        if config.handshakeTimeout is not None:
            self._timer = factory.reactor.callLater(
                config.handshakeTimeout, self._handshakeTimedOut
            )

    def dataReceived(self, data: bytes) -> None:
        """Hand C{data} to the current handler, or to the handshake."""
        try:
            handler = self.handler
            if handler is not None:
                handler.dataReceived(data)
            elif self.handshake is not None:
                self._negotiate(data)
            else:
                self._firstByte(data)
        except Exception:
            self._crash("handling the client's data failed")

    def readConnectionLost(self) -> None:
        """The client sent EOF: tell the current handler, or the handshake."""
        try:
            handler = self.handler
            if handler is not None:
                handler.readConnectionLost()
            elif self.handshake is not None:
                self._ended = True
                self.carryOut(self.handshake.clientEnded())
            else:
                self.finish("client sent EOF before anything else")
        except Exception:
            self._crash("handling the client's EOF failed")

    def writeConnectionLost(self) -> None:
        """Writing to the client was shut down: tell the current handler."""
        try:
            handler = self.handler
            if handler is not None:
                handler.writeConnectionLost()
        except Exception:
            self._crash("handling the client's half-close failed")

    def connectionLost(self, reason: Failure) -> None:
        """The client's connection is gone: clean up, then log the connection."""
        self.connected = 0
        self._cancelTimer()
        if self.admission is not None:
            self.admission.release()
        handler, self.handler = self.handler, _GONE
        if type(handler) is _Closing:
            handler = handler.previous
        try:
            if handler is not None:
                handler.connectionLost(reason)
            else:
                self._negotiationLost()
        except Exception:
            log.failure("cleaning up a closed connection failed")
        record = self.record
        factory = self.factory
        if record is None:
            factory.connections.discard(self)
            return
        now = factory.reactor.seconds()
        try:
            if record.reason is None and not reason.check(ConnectionDone):
                record.setReason(f"connection lost: {reason.getErrorMessage()}")
            record.emit(now)
        except Exception:
            log.failure("logging a connection failed")
        if factory.extras:
            # Metrics, accounting, GSS-API or the access log: one flag for all.
            self._closedWithExtras(factory, record, now)
        # Last: a drain waiting for the last connection may stop the access
        # log and the metrics now.
        factory.connections.discard(self)

    def _closedWithExtras(self, factory: Any, record: Any, now: float) -> None:
        """
        Give the factory's access log the connection's record; tell its
        metrics and accounting the connection is gone.
        """
        accessLog = factory.accessLog
        if accessLog is not None:
            try:
                accessLog.write(record, now)
            except Exception:
                log.failure("writing a connection's access record failed")
        metrics = factory.metrics
        if metrics is not None:
            try:
                metrics.connectionClosed(record)
            except Exception:
                log.failure("counting a connection failed")
        accounting = factory.accounting
        if accounting is not None and record.relay is not None:
            try:
                accounting.connectionClosed(record, now)
            except Exception:
                log.failure("accounting a connection's end failed")

    # For handlers

    @property
    def open(self) -> bool:
        """The client is still connected, and the connection not closing."""
        return bool(self.connected) and not self.closing

    def requestComplete(self) -> None:
        """The client's request is in: stop the handshake timer."""
        self._cancelTimer()
        factory = self.factory
        if factory.extras:
            metrics = factory.metrics
            if metrics is not None and self.record is not None:
                metrics.handshakeDone(factory.reactor.seconds() - self.record.started)

    def finish(self, reason: str, data: bytes = b"") -> None:
        """
        Write C{data} (a last reply), then close the connection.

        @param reason: how the connection ends, for its log event (unless an
            earlier reason was given).
        """
        if self.record is not None:
            self.record.setReason(reason)
        if self.closing:
            return
        self.closing = True
        self._cancelTimer()
        self.handler = _Closing(self.handler)
        transport = self.transport
        if data:
            writeNow(transport, data)
        self._paused = False
        transport.loseConnection()

    def abort(self, reason: str) -> None:
        """
        Drop the connection now, without writing what is still buffered.

        @param reason: how the connection ends, for its log event.
        """
        if self.record is not None:
            self.record.setReason(reason)
        self.closing = True
        self._cancelTimer()
        if type(self.handler) is not _Closing:
            self.handler = _Closing(self.handler)
        if self.transport is not None:
            try:
                abortTransport(self.transport)
            except Exception:
                log.failure("aborting a connection failed")

    def pauseReading(self) -> None:
        """Stop reading from the client until L{resumeReading}."""
        if not self._paused and not self.closing:
            self._paused = True
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """Read from the client again after L{pauseReading}."""
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()

    def bug(self, what: str, failure: Failure | None = None) -> None:
        """
        A bug in a callback: log it with its traceback, and drop the
        connection.

        @param failure: the failure, or L{None} inside an C{except} block.
        """
        log.failure(what, failure)
        self.abort(f"internal error: {what}")

    # The first byte

    def _firstByte(self, data: bytes) -> None:
        """
        The first byte picks the protocol (see the module docstring).

        Behind a PROXY-protocol listener (C{haproxy:}), the real client's
        address is known only once the PROXY header is read, which is
        before the first byte reaches the connection: so the client's
        address is looked at again here, and a new one is recorded and
        checked against the policy.
        """
        if not data:
            return
        record = self.record
        transport = self.transport
        # A plain TCP transport's peer is the one connectionMade saw.
        peer = record.client
        if type(transport) not in tcpTransports():
            peer = transport.getPeer()
        if peer != record.client:
            record.client = peer
            policy = self.factory.policy
            if policy is not None and not policy.allowClient(peer):
                self.finish("client refused by policy")
                return
            admission = self.admission
            if admission is not None and not admission.moveTo(peer):
                self.finish("too many connections from this client")
                return
        handlers = self.factory.handlers
        entry = handlers.get(data[0])
        if entry is None:
            reason = f"unknown first byte 0x{data[0]:02x}"
            if SOCKS6_VERSION in handlers:
                record.reply = "VERSION_MISMATCH"
                self.finish(reason, VERSION_MISMATCH)
            else:
                self.finish(reason)
            return
        handler = entry(self)
        if handler is None:
            # The entry gave the connection a handshake (negotiate).
            self._negotiate(data)
            return
        self.handler = handler
        handler.dataReceived(data)

    # The handshake

    def negotiate(self, handshake: ServerHandshake) -> None:
        """
        Drive C{handshake} from now on: the client's bytes go to it, and
        its actions are carried out.  A first-byte entry calls this and
        returns L{None} (see L{socksd.server.factory}).
        """
        self.handshake = handshake
        record = self.record
        record.protocol = handshake.protocol
        record.version = handshake.version

    def _negotiate(self, data: bytes) -> None:
        """Feed the handshake; hold back a client that sends too much."""
        handshake = self.handshake
        self.carryOut(handshake.dataReceived(data))
        self._fed += len(data)
        limit = self.factory.config.maxOptimisticData + MAX_MESSAGE
        if self._fed > limit and self.handler is None and handshake.buffered() > limit:
            self.pauseReading()

    def carryOut(self, actions: list[Any]) -> None:
        """Carry out the handshake's C{actions}, in order."""
        for action in actions:
            if not self.connected or self.closing:
                return
            kind = type(action)
            if kind is Send:
                writeNow(self.transport, action.data)
            elif kind is RequestReady:
                self._serve(action.request)
            elif kind is Refuse:
                self._refuse(action)
            elif kind is CheckCredentials:
                self._check(action)
            elif kind is AcceptContext:
                self._acceptContext(action)
            elif kind is AwaitSessions:
                self._awaitSessions(action)
            else:
                raise TypeError(f"not a handshake action: {action!r}")

    def _serve(self, request: Any) -> None:
        if self._paused and not self._ended:
            # The pipeline pauses again if the kept bytes are too many.
            self.resumeReading()
        pipeline = Pipeline(self, self.handshake, request, self._ended)
        self.handler = pipeline
        pipeline.run()

    def _refuse(self, refusal: Refuse) -> None:
        record = self.record
        record.protocol = self.handshake.protocol
        request = refusal.request
        if request is not None:
            record.commandCode = request.command
            record.destination = request.destination
            self.requestComplete()
        if refusal.reply is not None:
            record.reply = refusal.reply
        self.finish(refusal.reason, refusal.data)

    def _check(self, action: CheckCredentials) -> None:
        factory = self.factory
        client = self.record.client
        authenticator = factory.authenticator
        throttle = factory.throttle
        if throttle is not None and not throttle.allowed(client):
            # Locked out: refused without asking the checkers.
            checking: Deferred[Any] = Deferred()
            self._checking = checking
            checking.addCallbacks(self._checked, self._refused)
            checking.addErrback(self._checkBug)
            self.record.setReason("login throttled")
            checking.errback(AuthenticationFailed("login throttled"))
            return
        if authenticator is None:
            # Only GSS-API authenticates here: credentials cannot be checked.
            checking = Deferred()
            checking.addCallbacks(self._checked, self._refused)
            checking.addErrback(self._checkBug)
            checking.errback(AuthenticationFailed("no password authentication"))
            return
        checking = maybeDeferred(
            authenticator.authenticate, action.username, action.password, client
        )
        if throttle is not None:
            checking.addCallbacks(
                throttle.succeededFor(client), throttle.failedFor(client)
            )
        self._checking = checking
        checking.addCallbacks(self._checked, self._refused)
        checking.addErrback(self._checkBug)

    def _checked(self, avatar: Any) -> None:
        self._checking = None
        if not self.open:
            return
        self.record.user = avatar
        if not self._ended:
            self.resumeReading()
        self.carryOut(self.handshake.credentialsChecked(avatar))

    def _refused(self, failure: Failure) -> None:
        self._checking = None
        if not self.open:
            return
        if not failure.check(AuthenticationFailed):
            log.failure("checking credentials failed", failure)
        self.carryOut(self.handshake.credentialsRefused())

    def _checkBug(self, failure: Failure) -> None:
        self.bug("handling the result of an authentication failed", failure)

    def _acceptContext(self, action: AcceptContext) -> None:
        """
        Step the GSS-API acceptor context off the reactor thread (it reads
        the keytab and the replay cache), then answer the handshake.
        """
        from twisted.internet.threads import deferToThreadPool

        acceptor = self.factory.gssapi
        if acceptor is None:
            self.carryOut(self.handshake.contextFailed("GSS-API is not configured"))
            return
        handshake = self.handshake
        context = handshake.context
        if context is None:
            context = handshake.context = acceptor.newContext()
        reactor = self.factory.reactor
        stepping = deferToThreadPool(
            reactor, reactor.getThreadPool(), context.step, action.token
        )
        self._checking = stepping
        stepping.addCallbacks(self._contextStepped, self._contextRefused)
        stepping.addErrback(self._checkBug)

    def _contextStepped(self, result: tuple[bytes, bool]) -> None:
        self._checking = None
        if not self.open:
            return
        output, complete = result
        user = protection = None
        if complete:
            from socksd.auth import SocksUser

            context = self.handshake.context
            user = SocksUser(context.principal)
            protection = context.protection()
            self.record.user = user
        self.carryOut(self.handshake.contextStep(output, complete, user, protection))

    def _contextRefused(self, failure: Failure) -> None:
        self._checking = None
        if not self.open:
            return
        from socksd.gssapi import GssapiError

        if not failure.check(GssapiError):
            log.failure("a GSS-API context step failed", failure)
        reason = failure.getErrorMessage()
        log.warn(
            "GSS-API authentication failed from {client}: {reason}",
            client=self.record.client,
            reason=reason,
        )
        self.carryOut(self.handshake.contextFailed(reason))

    def _awaitSessions(self, action: AwaitSessions) -> None:
        """
        A shared session store answers later (it answers within its own
        deadline, never with a failure; see L{socksd.shared.sessions}).
        """
        pending = action.pending
        self._checking = pending
        pending.addCallback(self._sessionsAnswered)
        pending.addErrback(self._sessionsBug)

    def _sessionsAnswered(self, answer: Any) -> None:
        self._checking = None
        if not self.open:
            return
        self.carryOut(self.handshake.sessionsAnswered(answer))

    def _sessionsBug(self, failure: Failure) -> None:
        self._checking = None
        if failure.check(CancelledError):
            return
        self.bug("asking the SOCKS6 session store failed", failure)

    def _negotiationLost(self) -> None:
        """The client left before its first byte, or during its handshake."""
        record = self.record
        if record is None:
            return
        if self.handshake is None:
            record.setReason("client closed before sending anything")
            return
        checking, self._checking = self._checking, None
        if checking is not None:
            record.setReason("client closed during the authentication")
            checking.cancel()
        else:
            record.setReason("client closed during the handshake")

    # Internals

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _handshakeTimedOut(self) -> None:
        self._timer = None
        try:
            self.finish("handshake timeout")
        except Exception:
            self._crash("closing after the handshake timeout failed")

    def _crash(self, what: str) -> None:
        """
        A bug: log it with its traceback, and drop the connection.  Call
        only from an C{except} block.
        """
        self.bug(what)


def negotiating(
    build: Callable[[SocksConnection], ServerHandshake],
) -> Callable[[SocksConnection], None]:
    """
    An entry of the factory's C{handlers} mapping for a protocol with a
    sans-IO handshake: C{build(connection)} makes the handshake, which the
    connection then drives (L{SocksConnection.negotiate}).
    """

    def entry(connection: SocksConnection) -> None:
        connection.negotiate(build(connection))

    return entry
