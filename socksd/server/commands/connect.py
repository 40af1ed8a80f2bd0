"""
CONNECT, for every version: check the resolved addresses where the policy
asks, connect through the upstream within C{connectTimeout}, then reply and
relay.

A client that sends EOF before the reply, with no bytes for the
destination, waits for nothing: the attempt is given up and the connection
closed at once (it would otherwise hold a descriptor, and a place in the
connection limits, until the connect timeout).  With bytes kept for the
destination, the attempt goes on, and the destination gets them, then the
EOF.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import NotConnectingError
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import ConnectionRefused, ConnectTimeout, NotAllowed
from socksd.interfaces import Decision
from socksd.policy.resolved import checkResolved
from socksd.server.commands._base import Command
from socksd.server.socks6.dns import DnsService
from socksd.server.socks6.stack import (
    applyStackOptions,
    connectWithStackOptions,
    wantsStackConnect,
)
from socksd.upstream.direct import upstreamName
from socksd.server.relay import (
    UPSTREAM_FACTORY,
    UpstreamProtocol,
    abortTransport,
    boundDestination,
)

__all__ = ["Connect", "Socks6Connect", "ConnectAttempt", "resolvesLocally", "DNS_SERVICE"]

log = Logger()


def resolvesLocally(upstream: Any) -> bool:
    """
    Does C{upstream} resolve destination names on this host (a
    L{socksd.upstream.DirectUpstream}, or one whose C{resolvesLocally} is
    C{True}, as C{socks5://} URLs' are)?  Only then does the server resolve
    names itself to check them against the rules: resolving a name meant
    for another proxy (Tor, say) would leak it to the local resolver.
    """
    from socksd.upstream.direct import DirectUpstream

    return isinstance(upstream, DirectUpstream) or (
        getattr(upstream, "resolvesLocally", False) is True
    )


class _AttemptProtocol(UpstreamProtocol):
    """An L{UpstreamProtocol} that tells its L{ConnectAttempt} it is connected."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: ConnectAttempt) -> None:
        super().__init__()
        self.attempt: ConnectAttempt | None = attempt

    def connectionMade(self) -> None:
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            attempt.connected(self)


class ConnectAttempt(ClientFactory):
    """
    One connection attempt through an endpoint's C{connectFactory} fast
    path (see L{socksd.upstream}): the C{ClientFactory} given to the
    connector, and for the L{Connect} what the endpoint's Deferred would
    be: C{called} and C{cancel()}.  The command hears of the outcome once,
    as with the Deferred: C{connected(protocol)} or C{failed(failure)} (a
    C{CancelledError} after C{cancel}).
    """

    noisy = False

    def __init__(self, command: Connect) -> None:
        self.command: Connect | None = command
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
        # go of the command.
        command, self.command = self.command, None
        assert command is not None
        try:
            command.connected(protocol)
        except Exception:
            command.bug(Failure())

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if self.called:
            return
        self.called = True
        self._failed(reason)

    def cancel(self) -> None:
        """Give up on the attempt: the command gets a C{CancelledError}."""
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
        command, self.command = self.command, None
        assert command is not None
        try:
            command.failed(reason)
        except Exception:
            command.bug(Failure())


class Connect(Command):
    """
    CONNECT: see the module docstring.

    The steps are public so that a version can change one
    (L{socksd.server.commands.socks6.Socks6Connect}):
    L{start} (the resolved check), L{connect} (the endpoint), L{open} (the
    attempt), L{connected} (reply and relay) and L{failed}.

    @ivar decision: the policy's decision (after the resolved check).
    """

    __slots__ = ("decision", "_attempt", "_timer", "_timedOut", "_upstream", "_endpoint")

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.decision: Decision | None = None
        self._attempt: Any = None
        self._timer: Any = None
        self._timedOut = False
        self._upstream: Any = None
        self._endpoint: Any = None

    def start(self, decision: Decision) -> None:
        """
        Check the addresses a name resolves to when the decision asks for
        it and the upstream resolves names here; then L{connect}.
        """
        pipeline = self.pipeline
        if pipeline.clientEnded and not pipeline.earlyData():
            # The request came with the client's EOF and no data: nobody
            # waits for the tunnel.
            pipeline.connection.finish("client sent EOF before the tunnel was up")
            return
        factory = pipeline.factory
        upstream = decision.upstream or factory.upstream
        if decision.checkAddresses and resolvesLocally(upstream):
            checking = checkResolved(
                factory.policy,
                factory.resolver,
                pipeline.context,
                pipeline.request.destination,
                decision,
            )
            if not checking.called:
                self._attempt = checking
            checking.addCallbacks(self._checked, self._checkFailed)
            checking.addErrback(self.bug)
            return
        self.connect(decision)

    def _checked(self, decision: Decision) -> None:
        self._attempt = None
        pipeline = self.pipeline
        if not pipeline.connection.open:
            return
        pipeline.connection.record.rule = decision.rule
        if not decision.allowed:
            pipeline.refuse(
                NotAllowed(decision.reason or ""),
                f"destination refused: {decision.reason}",
            )
            return
        self.connect(decision)

    def _checkFailed(self, failure: Failure) -> None:
        self._attempt = None
        if self.pipeline.connection.open:
            self.pipeline.refuse(
                failure, f"destination refused: {failure.getErrorMessage()}"
            )

    def connect(self, decision: Decision) -> None:
        """Connect to the destination, which C{decision} allowed."""
        self.decision = decision
        pipeline = self.pipeline
        factory = pipeline.factory
        context = pipeline.context
        if decision.bindAddress is not None:
            context = context._replace(bindAddress=decision.bindAddress)
        upstream = decision.upstream or factory.upstream
        try:
            endpoint = upstream.endpointFor(pipeline.request.destination, context)
            self._endpoint = endpoint
            attempt = self.open(endpoint)
        except Exception as error:
            self._attempt = None
            log.failure("the upstream factory failed to start a connection")
            pipeline.refuse(error, f"connect failed: {error}")
            return
        self._attempt = attempt
        timeout = factory.config.connectTimeout
        if timeout is not None and not attempt.called:
            self._timer = factory.reactor.callLater(timeout, self._timedOutNow)

    def open(self, endpoint: Any) -> Any:
        """
        Start connecting through C{endpoint}.

        @return: the attempt: something with C{called} and C{cancel()}
            that leads to L{connected} or L{failed}.
        """
        connectFactory = getattr(endpoint, "connectFactory", None)
        if connectFactory is not None:
            # The fast path of socksd.upstream's endpoints for address
            # literals: a connector, no Deferred.
            attempt = ConnectAttempt(self)
            self._attempt = attempt
            if self.pipeline.factory.config.connectTimeout is None:
                attempt.connector = connectFactory(attempt)
            else:
                # The connect timer serves: the connector needs no timer.
                attempt.connector = connectFactory(attempt, timeout=None)
            return attempt
        connecting = endpoint.connect(UPSTREAM_FACTORY)
        self._attempt = connecting
        connecting.addCallbacks(self.connected, self.failed)
        connecting.addErrback(self.bug)
        return connecting

    def replyOptions(self, upstream: UpstreamProtocol) -> tuple[Any, ...]:
        """The options of the success reply (SOCKS6's stack options)."""
        return ()

    def _upstreamFactory(self) -> Any:
        """The upstream factory the decision chose, or the server's."""
        decision = self.decision
        upstream = decision.upstream if decision is not None else None
        return upstream or self.pipeline.factory.upstream

    def connected(self, upstream: UpstreamProtocol) -> None:
        """Connected: send the success reply, then relay."""
        self._stopTimer()
        self._upstream = upstream
        pipeline = self.pipeline
        connection = pipeline.connection
        if not connection.connected or connection.closing:
            upstream.transport.loseConnection()
            return
        endpoint = self._endpoint
        name = getattr(endpoint, "upstreamName", None)
        connection.record.upstream = (
            name if name is not None else upstreamName(self._upstreamFactory(), endpoint)
        )
        decision = self.decision
        transport = upstream.transport
        connection.record.upstreamTransport = transport
        pipeline.startTunnel(
            upstream,
            boundDestination(transport.getHost()),
            self.replyOptions(upstream),
            decision.bandwidth if decision is not None else None,
        )
        self._upstream = None

    def failed(self, failure: Failure) -> None:
        """The attempt failed: refuse with the reply for what happened."""
        self._stopTimer()
        pipeline = self.pipeline
        if not pipeline.connection.open:
            return
        if self._timedOut:
            error: BaseException | Failure = ConnectTimeout(
                "connecting took longer than the connect timeout"
            )
        else:
            error = failure
        pipeline.refuse(error, f"connect failed: {failure.getErrorMessage()}")

    def bug(self, failure: Failure) -> None:
        """A bug in a callback: log it, drop both sides."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None and upstream.transport is not None:
            abortTransport(upstream.transport)
        self.pipeline.connection.bug(
            "handling the upstream connection failed", failure
        )

    def readConnectionLost(self) -> None:
        """
        The client sent EOF while connecting: with bytes kept for the
        destination, go on (it gets them, then the EOF); with none, give
        up the attempt and close now.
        """
        attempt = self._attempt
        pipeline = self.pipeline
        if attempt is None or pipeline.earlyData():
            return
        pipeline.connection.finish("client sent EOF while connecting")
        self._stopTimer()
        attempt.cancel()

    def stop(self) -> None:
        """The client left: give up on the attempt in progress."""
        attempt = self._attempt
        if attempt is None:
            return
        self.pipeline.connection.record.setReason("client closed while connecting")
        self._stopTimer()
        attempt.cancel()

    def _timedOutNow(self) -> None:
        self._timer = None
        attempt = self._attempt
        if attempt is not None:
            self._timedOut = True
            try:
                attempt.cancel()
            except Exception:
                log.failure("cancelling a connection attempt failed")
                self.pipeline.connection.abort(
                    "internal error: cancelling a connection attempt failed"
                )

    def _stopTimer(self) -> None:
        self._attempt = None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


#: The destinations that name SOCKS6's DNS service (draft-11 section 11).
DNS_SERVICE = frozenset(
    {Destination(IPv4Address(0), 53), Destination(IPv6Address(0), 53)}
)
_UNSPECIFIED = Destination(IPv4Address(0), 0)


class Socks6Connect(Connect):
    """
    SOCKS6's CONNECT: the DNS service address gets the DNS service (with
    C{ServerConfig.socks6Dns}, L{socksd.server.socks6.dns}) or is refused
    (05); any other destination is connected as for every version, with the
    request's stack options: TFO and Multipath make the socket through a
    L{StackConnector <socksd.server.socks6.stack.StackConnector>} when the
    upstream is socksd's direct one, and the success reply echoes what was
    applied (L{socksd.server.socks6.stack.applyStackOptions}).
    """

    __slots__ = ("_stackConnector",)

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline)
        self._stackConnector: Any = None

    @property
    def policyCheck(self) -> str | None:  # type: ignore[override]
        """The DNS service is not a destination: no policy decision."""
        if self.pipeline.request.destination in DNS_SERVICE:
            return None
        return "destination"

    def start(self, decision: Decision) -> None:
        """The DNS service, or L{Connect.start}."""
        if self.pipeline.request.destination in DNS_SERVICE:
            self._dnsService()
            return
        super().start(decision)

    def _dnsService(self) -> None:
        pipeline = self.pipeline
        if not pipeline.factory.config.socks6Dns:
            pipeline.refuse(
                ConnectionRefused("the SOCKS6 DNS service is not offered"),
                "DNS service not offered",
            )
            return
        pipeline.sendSuccess(_UNSPECIFIED)
        service = DnsService(pipeline.connection)
        early = pipeline.handOver(service)
        if early:
            service.dataReceived(early)
        if pipeline.clientEnded:
            service.readConnectionLost()

    def open(self, endpoint: Any) -> Any:
        """
        Connect as every version does, unless the request asks for TFO or
        Multipath and the endpoint is one of socksd's direct endpoints to
        an address literal: then through a stack connector.
        """
        pipeline = self.pipeline
        request = pipeline.request
        stackOptions = request.socks6.stackOptions
        if request.destination.isName or not wantsStackConnect(
            stackOptions, self._upstreamFactory()
        ):
            return super().open(endpoint)
        attempt = ConnectAttempt(self)
        try:
            connector = connectWithStackOptions(
                stackOptions, endpoint, attempt, pipeline.earlyData()
            )
        except Exception:
            log.failure("connecting with SOCKS6 stack options failed")
            connector = None
        if connector is None:
            return super().open(endpoint)
        self._stackConnector = attempt.connector = connector
        return attempt

    def replyOptions(self, upstream: UpstreamProtocol) -> tuple[Any, ...]:
        """The stack options applied to the upstream socket, echoed."""
        pipeline = self.pipeline
        request = pipeline.request
        connector, self._stackConnector = self._stackConnector, None
        sent = connector.sentInSyn if connector is not None else 0
        if sent:
            pipeline.skipEarly(sent)
        try:
            return applyStackOptions(
                request.socks6.stackOptions,
                upstream.transport,
                request.destination,
                self._upstreamFactory(),
                tfoSent=sent,
            )
        except Exception:
            log.failure("applying SOCKS6 stack options failed")
            return ()
