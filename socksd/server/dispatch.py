"""
The first-byte dispatcher: one listening port for every protocol.

The factory builds a L{Dispatcher} per connection.  The first byte the client
sends picks a handler class from the factory's C{handlers} mapping (0x04
SOCKS4/4A, 0x05 SOCKS5, 0x06 SOCKS6, the first letters of HTTP methods); a
byte no handler claims closes the connection.  The handler gets every byte,
the first included, and every later event of the connection; once a tunnel
is up, the relay's direction object takes its place (see
L{socksd.server.relay}).

A handler is any class whose instances are built as C{cls(dispatcher)} and
have C{dataReceived(data)}, C{readConnectionLost()},
C{writeConnectionLost()} and C{connectionLost(reason)}; L{Handler} is the
base.  L{RequestHandler} is the base of the SOCKS protocols that ask for an
upstream connection: it holds optimistic data, checks policy, connects with
a timeout, sends the reply and starts the relay.  This module also has the
handler that needs no codec: L{HttpResistance}.

The dispatcher keeps the connection's L{ConnectionRecord} and sends its one
log event when the connection is gone; it guards every entry point, so that
no exception reaches the reactor.
"""

from __future__ import annotations

from dataclasses import replace
from html import escape
from typing import Any, ClassVar

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone, NotConnectingError
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socksd.address import Destination
from socksd.errors import (
    ConnectTimeout,
    GeneralFailure,
    NotAllowed,
    UnsupportedCommand,
)
from socksd.interfaces import ConnectContext
from socksd.replies import ReplyProfile, replyFor, successFor
from socksd.server._log import ConnectionRecord, commandName
from socksd.server.limits import BandwidthLimits, checkResolved, resolvesLocally
from socksd.server.relay import (
    UPSTREAM_FACTORY,
    UpstreamProtocol,
    abortTransport,
    boundDestination,
    setNoDelay,
    startRelay,
    tcpTransports,
    writeNow,
)

__all__ = [
    "Dispatcher",
    "Handler",
    "RequestHandler",
    "HttpResistance",
    "HTTP_METHODS",
    "HTTP_FIRST_BYTES",
    "MAX_HTTP_REQUEST",
]

log = Logger()


class _Closing:
    """
    The handler of a connection that is closing: it ignores what still
    arrives, and lets the previous handler clean up when the connection is
    gone.
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
        if self.previous is not None:
            self.previous.connectionLost(reason)


class _FirstByte:
    """
    The handler of a new connection: the first byte picks the next one.

    Behind a PROXY-protocol listener (C{haproxy:}), the real client's
    address is known only once the PROXY header is read, which is before the
    first byte reaches the dispatcher: so the client's address is looked at
    again here, and a new one is recorded and checked against the policy.
    """

    __slots__ = ("connection",)

    def __init__(self, connection: Dispatcher) -> None:
        self.connection = connection

    def dataReceived(self, data: bytes) -> None:
        if not data:
            return
        connection = self.connection
        record = connection.record
        transport = connection.transport
        # A plain TCP transport's peer is the one connectionMade saw.
        peer = record.client
        if type(transport) not in tcpTransports():
            peer = transport.getPeer()
        if peer != record.client:
            record.client = peer
            policy = connection.factory.policy
            if policy is not None and not policy.allowClient(peer):
                connection.finish("client refused by policy")
                return
            admission = connection.admission
            if admission is not None and not admission.moveTo(peer):
                connection.finish("too many connections from this client")
                return
        handlerClass = connection.factory.handlers.get(data[0])
        if handlerClass is None:
            connection.finish(f"unknown first byte 0x{data[0]:02x}")
            return
        handler = handlerClass(connection)
        connection.handler = handler
        handler.dataReceived(data)

    def readConnectionLost(self) -> None:
        self.connection.finish("client sent EOF before anything else")

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.connection.record.setReason("client closed before sending anything")


@implementer(IProtocol, IHalfCloseableProtocol)
class Dispatcher:
    """
    The protocol of one client connection; see the module docstring.

    @ivar factory: the L{socksd.server.SocksServerFactory}.
    @ivar transport: the client's transport.
    @ivar record: the connection's L{ConnectionRecord}.
    @ivar handler: where the connection's events go now.
    @ivar closing: C{True} once L{finish} was called.
    """

    __slots__ = (
        "factory",
        "transport",
        "connected",
        "record",
        "handler",
        "closing",
        "_timer",
        "_paused",
        "admission",
    )

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.transport: Any = None
        self.connected = 0
        self.record: ConnectionRecord | None = None
        self.handler: Any = _FirstByte(self)
        self.closing = False
        self._timer: Any = None
        self._paused = False
        #: the connection's place in the factory's connection limits
        #: (L{socksd.server.limits.Admission}), or L{None}.
        self.admission: Any = None

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
        client = self.transport.getPeer()
        self.record = ConnectionRecord(client, factory.reactor.seconds())
        config = factory.config
        if config.tcpNoDelay:
            setNoDelay(self.transport)
        policy = factory.policy
        if policy is not None and not policy.allowClient(client):
            self.finish("client refused by policy")
            return
        limits = getattr(factory, "limits", None)
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
        """Hand C{data} to the current handler."""
        try:
            self.handler.dataReceived(data)
        except Exception:
            self._crash("handling the client's data failed")

    def readConnectionLost(self) -> None:
        """The client sent EOF: tell the current handler."""
        try:
            self.handler.readConnectionLost()
        except Exception:
            self._crash("handling the client's EOF failed")

    def writeConnectionLost(self) -> None:
        """Writing to the client was shut down: tell the current handler."""
        try:
            self.handler.writeConnectionLost()
        except Exception:
            self._crash("handling the client's half-close failed")

    def connectionLost(self, reason: Failure) -> None:
        """The client's connection is gone: clean up, then log the connection."""
        self.connected = 0
        self._cancelTimer()
        if self.admission is not None:
            self.admission.release()
        handler, self.handler = self.handler, _Closing(None)
        try:
            handler.connectionLost(reason)
        except Exception:
            log.failure("cleaning up a closed connection failed")
        record = self.record
        if record is None:
            return
        try:
            if record.reason is None and not reason.check(ConnectionDone):
                record.setReason(f"connection lost: {reason.getErrorMessage()}")
            record.emit(self.factory.reactor.seconds())
        except Exception:
            log.failure("logging a connection failed")
        metrics = getattr(self.factory, "metrics", None)
        if metrics is not None:
            try:
                metrics.connectionClosed(record)
            except Exception:
                log.failure("counting a connection failed")

    # For handlers

    def requestComplete(self) -> None:
        """The client's request is in: stop the handshake timer."""
        self._cancelTimer()
        metrics = getattr(self.factory, "metrics", None)
        if metrics is not None and self.record is not None:
            metrics.handshakeDone(self.factory.reactor.seconds() - self.record.started)

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
        log.failure(what)
        self.abort(f"internal error: {what}")

    def abort(self, reason: str) -> None:
        """
        Drop the connection now, without writing what is still buffered.

        @param reason: how the connection ends, for its log event.
        """
        if self.record is not None:
            self.record.setReason(reason)
        self.closing = True
        self._cancelTimer()
        if not isinstance(self.handler, _Closing):
            self.handler = _Closing(self.handler)
        if self.transport is not None:
            try:
                abortTransport(self.transport)
            except Exception:
                log.failure("aborting a connection failed")


class _AttemptProtocol(UpstreamProtocol):
    """An L{UpstreamProtocol} that tells its L{_UpstreamAttempt} it is connected."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: _UpstreamAttempt) -> None:
        super().__init__()
        self.attempt: _UpstreamAttempt | None = attempt

    def connectionMade(self) -> None:
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.connected(self)


class _UpstreamAttempt(ClientFactory):
    """
    One connection attempt through an endpoint's C{connectFactory} fast
    path (see L{socksd.upstream}): the C{ClientFactory} given to
    C{connectTCP}, and for the L{RequestHandler} what the endpoint's
    Deferred would be: C{called} and C{cancel()}.  The handler hears of the
    outcome once, as with the Deferred: C{_connected(protocol)} or
    C{_connectFailed(failure)} (a C{CancelledError} after C{cancel}).
    """

    noisy = False

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler
        self.connector: Any = None
        self.called = False

    def buildProtocol(self, addr: Any) -> _AttemptProtocol:
        return _AttemptProtocol(self)

    def connected(self, protocol: UpstreamProtocol) -> None:
        if self.called:
            protocol.transport.loseConnection()
            return
        self.called = True
        # The connector keeps this factory as long as the tunnel lasts: let
        # go of the handler.
        handler, self.handler = self.handler, None
        try:
            handler._connected(protocol)
        except Exception:
            handler._connectBug(Failure())

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if self.called:
            return
        self.called = True
        self._failed(reason)

    def cancel(self) -> None:
        """Give up on the attempt: the handler gets a C{CancelledError}."""
        if self.called:
            return
        self.called = True
        connector = self.connector
        if connector is not None:
            try:
                connector.stopConnecting()
            except NotConnectingError:
                pass
        self._failed(Failure(CancelledError("the connection attempt was cancelled")))

    def _failed(self, reason: Failure) -> None:
        handler, self.handler = self.handler, None
        try:
            handler._connectFailed(reason)
        except Exception:
            handler._connectBug(Failure())


class Handler:
    """
    The base of the handlers a L{Dispatcher} hands a connection to.

    @ivar connection: the L{Dispatcher}.
    """

    __slots__ = ("connection",)

    def __init__(self, connection: Dispatcher) -> None:
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


#: The HTTP methods whose requests get the "this is a SOCKS proxy" page.
HTTP_METHODS = (
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"CONNECT ",
    b"OPTIONS ",
    b"DELETE ",
    b"PATCH ",
    b"TRACE ",
)
#: The first bytes of L{HTTP_METHODS}, for the dispatcher's mapping.
HTTP_FIRST_BYTES = frozenset(method[0] for method in HTTP_METHODS)
#: How much of an HTTP request is read, at most, before answering.
MAX_HTTP_REQUEST = 8192

_HTTP_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>This is a SOCKS proxy, not an HTTP proxy</title></head>
<body>
<h1>This is a SOCKS proxy, not an HTTP proxy</h1>
<p>You reached socksd, a SOCKS proxy (SOCKS4, SOCKS4A and SOCKS5), with an
HTTP request.  It does not speak HTTP: configure your program to use it as a
<em>SOCKS</em> proxy instead.</p>
<ul>
<li>Firefox: Settings, Network Settings, Manual proxy configuration: put
{host} and port {port} in <em>SOCKS Host</em>, choose SOCKS v5, and tick
<em>Proxy DNS when using SOCKS v5</em>; leave <em>HTTP Proxy</em> empty.</li>
<li>Chromium and Chrome: start them with
<code>--proxy-server="socks5://{host}:{port}"</code>.</li>
<li>curl: <code>curl --socks5-hostname {host}:{port} URL</code>, or
<code>ALL_PROXY=socks5h://{host}:{port}</code>.</li>
<li>Other programs: set <code>ALL_PROXY=socks5h://{host}:{port}</code>, or look for
their SOCKS proxy setting.</li>
</ul>
</body>
</html>
"""


def _httpResponse(method: bytes, listening: Any) -> bytes:
    """The response to an HTTP request on the SOCKS port."""
    host = getattr(listening, "host", None)
    port = getattr(listening, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        if ":" in host:
            host = f"[{host}]"
        if host in ("0.0.0.0", "[::]"):
            host = "this host's address"
        shownHost, shownPort = escape(host), str(port)
    else:
        shownHost, shownPort = "this proxy's address", "its port"
    body = _HTTP_PAGE.format(host=shownHost, port=shownPort).encode("utf-8")
    head = (
        "HTTP/1.0 501 Not Implemented\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if method == b"HEAD" else head + body


class HttpResistance(Handler):
    """
    An HTTP request on the SOCKS port (a browser set up with an HTTP proxy):
    read the request line and headers (at most L{MAX_HTTP_REQUEST} bytes),
    answer 501 with a page that says how to use a SOCKS proxy, and close.
    First bytes that start no HTTP method are closed without an answer.
    """

    __slots__ = ("_buffer", "_method")

    def __init__(self, connection: Dispatcher) -> None:
        super().__init__(connection)
        self._buffer = bytearray()
        self._method: bytes | None = None

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data[: MAX_HTTP_REQUEST - len(buffer)]
        if self._method is None:
            for method in HTTP_METHODS:
                if buffer.startswith(method):
                    self._method = method[:-1]
                    self.connection.record.protocol = "http"
                    break
            else:
                head = bytes(buffer)
                if any(method.startswith(head) for method in HTTP_METHODS):
                    return
                self.connection.finish(f"unknown first bytes {head[:8].hex(' ')}")
                return
        if (
            b"\r\n\r\n" in buffer
            or b"\n\n" in buffer
            or len(buffer) >= MAX_HTTP_REQUEST
        ):
            self._answer()

    def readConnectionLost(self) -> None:
        if self._method is not None:
            self._answer()
        else:
            self.connection.finish("client sent EOF during the handshake")

    def _answer(self) -> None:
        connection = self.connection
        connection.requestComplete()
        connection.record.reply = "HTTP_501"
        assert self._method is not None
        connection.finish(
            f"HTTP {self._method.decode('ascii')} request on the SOCKS port",
            _httpResponse(self._method, connection.transport.getHost()),
        )


class RequestHandler(Handler):
    """
    The base of the SOCKS protocols: what happens after a request is parsed.

    A subclass parses the handshake, then calls L{dispatchRequest}, which
    looks the command up in L{commands} and calls the method named there
    with C{(destination, context)}; a command not in the table is answered
    "command not supported".  L{connect}, the CONNECT method, is here.
    Bytes the client sends after its request go to L{keepEarly}.

    Subclasses define L{version}, L{commands} and L{buildReply}.

    @cvar version: the SOCKS version, for contexts and logs.
    @cvar commands: raw command code to the name of the method serving it;
        extend it in a subclass (C{{**Base.commands, CMD_BIND: "bind"}}).
    @ivar profile: the reply profile.
    """

    version: ClassVar[int] = 0
    commands: ClassVar[dict[int, str]] = {}

    __slots__ = (
        "profile",
        "_early",
        "_earlySize",
        "_requested",
        "_clientEnded",
        "_connecting",
        "_connectTimer",
        "_timedOut",
        "_upstream",
        "_bandwidth",
    )

    def __init__(self, connection: Dispatcher, profile: ReplyProfile) -> None:
        super().__init__(connection)
        self.profile = profile
        self._early: list[bytes] = []
        self._earlySize = 0
        self._requested = False
        self._clientEnded = False
        self._connecting: Deferred[Any] | None = None
        self._connectTimer: Any = None
        self._timedOut = False
        self._upstream: UpstreamProtocol | None = None
        self._bandwidth: float | None = None
        record = connection.record
        record.version = self.version

    # For subclasses

    def buildReply(self, code: int, bound: Destination | None) -> bytes:
        """
        Encode a reply to the request.

        @param code: the reply code (from L{socksd.replies}).
        @param bound: the bound address of a success, or L{None} for a
            failure (the protocol's unspecified address).
        """
        raise NotImplementedError()

    def keepEarly(self, data: bytes) -> None:
        """
        Keep bytes the client sent after its request, for the destination;
        past C{maxOptimisticData}, stop reading from the client.
        """
        if not data or self._early is None:
            return
        self._early.append(data)
        self._earlySize += len(data)
        if self._earlySize >= self.connection.factory.config.maxOptimisticData:
            self.connection.pauseReading()

    def noteRequest(self, command: int, destination: Destination) -> None:
        """Record the request, and stop the handshake timer."""
        self._requested = True
        record = self.connection.record
        record.commandCode = command
        record.destination = destination
        self.connection.requestComplete()

    def dispatchRequest(
        self,
        command: int,
        destination: Destination,
        credentials: tuple[bytes, bytes] | None = None,
        isolationKey: Any = None,
        pairs: Any = None,
    ) -> None:
        """
        Serve a parsed request: answer "command not supported" or call the
        method L{commands} names.

        @param credentials: the username and password the client sent.
        @param isolationKey: see L{ConnectContext.isolationKey}.
        @param pairs: see L{ConnectContext.pairs}.
        """
        self.noteRequest(command, destination)
        name = self.commands.get(command)
        if name is None:
            self.refuse(
                UnsupportedCommand(
                    f"command {commandName(command)} is not served", command=command
                ),
                f"command {commandName(command)} not supported",
            )
            return
        record = self.connection.record
        admission = self.connection.admission
        if admission is not None and not admission.admitUser(record.user):
            self.refuse(
                GeneralFailure("too many connections for this user"),
                "too many connections for this user",
            )
            return
        context = ConnectContext(
            client=record.client,
            version=self.version,
            command=command,
            user=record.user,
            isolationKey=isolationKey,
            credentials=credentials,
            pairs=pairs if pairs is not None else {},
            bindAddress=getattr(self.connection.factory, "outgoingAddress", None),
        )
        getattr(self, name)(destination, context)

    def refuse(self, error: BaseException | Failure, reason: str) -> None:
        """Send the failure reply for C{error}, then close."""
        code = replyFor(error, self.profile)
        self.connection.record.reply = code
        self._early = None
        self.connection.finish(reason, self.buildReply(code, None))

    def checkPolicy(
        self, destination: Destination, context: ConnectContext
    ) -> ConnectContext | None:
        """
        Ask the factory's policy about a request.

        A policy with a C{routeFor} method (L{socksd.policy.Policy}) is asked
        that, and the bind address of its decision goes into the context;
        any other L{IPolicy} is asked C{allowRequest}.

        @return: the context to connect with, or L{None} when the policy
            refuses.
        """
        policy = self.connection.factory.policy
        routeFor = getattr(policy, "routeFor", None)
        if routeFor is None:
            return context if policy.allowRequest(context, destination) else None
        decision = routeFor(context, destination)
        if not decision.allowed:
            return None
        self._bandwidth = getattr(decision, "bandwidth", None)
        bindAddress = getattr(decision, "bindAddress", None)
        if bindAddress is not None:
            context = replace(context, bindAddress=bindAddress)
        return context

    def checkLogin(self, username: bytes, password: bytes) -> Deferred:
        """
        Check a username and password with the factory's authenticator.

        @return: a L{Deferred} firing with the avatar, or failing (after the
            authenticator's delay) with L{socksd.errors.AuthenticationFailed}.
        """
        connection = self.connection
        return maybeDeferred(
            connection.factory.authenticator.authenticate,
            username,
            password,
            connection.record.client,
        )

    def allowedBy(
        self, destination: Destination, context: ConnectContext, what: str
    ) -> ConnectContext | None:
        """
        Ask the factory's policy (if any) about a request, as
        L{checkPolicy} does; when it refuses, or fails to decide, refuse the
        client and return L{None}.

        @param what: what is asked for, for the log ("destination", "BIND",
            "UDP ASSOCIATE", "lookup").
        @return: the context to go on with.
        """
        if self.connection.factory.policy is None:
            return context
        try:
            checked = self.checkPolicy(destination, context)
        except Exception as error:
            log.failure("the policy failed to decide on a {what}", what=what)
            self.refuse(error, f"policy failed: {error}")
            return None
        if checked is None:
            self.refuse(NotAllowed(), f"{what} refused by policy")
        return checked

    # CONNECT

    def connect(self, destination: Destination, context: ConnectContext) -> None:
        """
        CONNECT: check the policy, ask the upstream factory for an endpoint
        and connect, within C{connectTimeout}.
        """
        factory = self.connection.factory
        if factory.policy is not None:
            context = self.allowedBy(destination, context, "destination")
            if context is None:
                return
            if getattr(
                factory.policy, "requireResolvedCheck", False
            ) and resolvesLocally(factory.upstream):
                checking = checkResolved(
                    factory.policy, factory.resolver, context, destination
                )
                if not checking.called:
                    self._connecting = checking
                checking.addCallbacks(
                    lambda _: self._connectChecked(destination, context),
                    self._resolvedCheckFailed,
                )
                checking.addErrback(self._connectBug)
                return
        self._connectChecked(destination, context)

    def _resolvedCheckFailed(self, failure: Failure) -> None:
        self._connecting = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        self.refuse(failure, f"destination refused: {failure.getErrorMessage()}")

    def _connectChecked(
        self, destination: Destination, context: ConnectContext
    ) -> None:
        """Connect to C{destination}, which the policy allowed."""
        self._connecting = None
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        factory = connection.factory
        try:
            endpoint = factory.upstream.endpointFor(destination, context)
            connectFactory = getattr(endpoint, "connectFactory", None)
            if connectFactory is not None:
                # The fast path of socksd.upstream's endpoints for address
                # literals: reactor.connectTCP, no Deferred.
                attempt: Any = _UpstreamAttempt(self)
                self._connecting = attempt
                if factory.config.connectTimeout is None:
                    attempt.connector = connectFactory(attempt)
                else:
                    # The connect timer below serves: the connector needs
                    # no timer of its own.
                    attempt.connector = connectFactory(attempt, timeout=None)
            else:
                attempt = endpoint.connect(UPSTREAM_FACTORY)
                self._connecting = attempt
                attempt.addCallbacks(self._connected, self._connectFailed)
                attempt.addErrback(self._connectBug)
        except Exception as error:
            self._connecting = None
            log.failure("the upstream factory failed to start a connection")
            self.refuse(error, f"connect failed: {error}")
            return
        timeout = factory.config.connectTimeout
        if timeout is not None and not attempt.called:
            self._connectTimer = factory.reactor.callLater(
                timeout, self._connectTimedOut
            )

    def _connectTimedOut(self) -> None:
        self._connectTimer = None
        attempt = self._connecting
        if attempt is not None:
            self._timedOut = True
            try:
                attempt.cancel()
            except Exception:
                log.failure("cancelling a connection attempt failed")
                self.connection.abort(
                    "internal error: cancelling a connection attempt failed"
                )

    def _stopConnectTimer(self) -> None:
        self._connecting = None
        timer, self._connectTimer = self._connectTimer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _connected(self, upstream: UpstreamProtocol) -> None:
        self._stopConnectTimer()
        self._upstream = upstream
        connection = self.connection
        if not connection.connected or connection.closing:
            upstream.transport.loseConnection()
            return
        config = connection.factory.config
        code = successFor(self.profile)
        record = connection.record
        record.reply = code
        writeNow(
            connection.transport,
            self.buildReply(code, boundDestination(upstream.transport.getHost())),
        )
        early = b"".join(self._early) if self._early else b""
        self._early = None
        if not self._clientEnded:
            connection.resumeReading()
        bandwidth = getattr(connection.factory, "bandwidth", None)
        if bandwidth is None and self._bandwidth is not None:
            bandwidth = BandwidthLimits(connection.factory.reactor)
        relay = startRelay(
            connection,
            upstream,
            connection.factory.reactor,
            initialData=early,
            clientEnded=self._clientEnded,
            idleTimeout=config.idleTimeout,
            noDelay=config.tcpNoDelay,
            record=record,
            splice=config.splice and bandwidth is None,
        )
        self._upstream = None
        metrics = getattr(connection.factory, "metrics", None)
        if metrics is not None:
            metrics.tunnelOpened(record)
        if bandwidth is not None:
            bandwidth.throttle(relay, record.client, record.user, self._bandwidth)

    def _connectFailed(self, failure: Failure) -> None:
        self._stopConnectTimer()
        connection = self.connection
        if not connection.connected or connection.closing:
            return
        if self._timedOut:
            error: BaseException | Failure = ConnectTimeout(
                "connecting took longer than the connect timeout"
            )
        else:
            error = failure
        self.refuse(error, f"connect failed: {failure.getErrorMessage()}")

    def _connectBug(self, failure: Failure) -> None:
        log.failure("handling the upstream connection failed", failure)
        upstream, self._upstream = self._upstream, None
        if upstream is not None and upstream.transport is not None:
            abortTransport(upstream.transport)
        self.connection.abort("internal error: handling the upstream connection failed")

    # Connection events

    def readConnectionLost(self) -> None:
        """
        EOF from the client: before its request, close; after it, remember,
        so that the destination gets the EOF after the optimistic data.
        """
        if self._requested:
            self._clientEnded = True
        else:
            super().readConnectionLost()

    def connectionLost(self, reason: Failure) -> None:
        """Give up on a connection attempt in progress."""
        attempt = self._connecting
        if attempt is not None:
            self.connection.record.setReason("client closed while connecting")
            self._stopConnectTimer()
            attempt.cancel()
        elif not self._requested:
            super().connectionLost(reason)
