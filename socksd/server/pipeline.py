"""
The one request pipeline, the same for every version.

When a connection's handshake says the request is ready, a L{Pipeline}
becomes the connection's handler and serves the request:

  1. the command: the factory's C{commands} registry, keyed by version and
     command code, gives the command class (L{socksd.server.commands});
     a code it does not list is answered "command not supported";
  2. onion names: an invalid C{.onion} name is refused before anything is
     asked (Tor's extended error F6 with C{--extended-errors});
  3. admission: the authenticated user's share of the connection limits;
  4. the policy's L{Decision} (allow or refuse, the rule, the upstream,
     bandwidth, outgoing address, quota), for commands that ask one;
  5. the fleet's admission, when the connection's admission has a C{gate}
     (shared state: L{socksd.shared}): the fleet-wide caps and the quotas,
     asked of Redis (or of the local quota file), which answers within a
     second; the gate then starts the command, or refuses.  Without shared
     state nothing here waits;
  6. the command object, which may check the resolved addresses
     (L{socksd.policy.resolved}), connects, listens or looks up, and
     reports through the pipeline: L{Pipeline.refuse},
     L{Pipeline.startTunnel} (the reply, then the relay) or
     L{Pipeline.answer} (the reply, then close).

Bytes the client sends after its request (optimistic data, SOCKS6 initial
data) are kept, bounded by C{maxOptimisticData}, and delivered first.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import (
    GeneralFailure,
    NotAllowed,
    OnionInvalidAddress,
    UnsupportedCommand,
)
from socksd.handshake import Request, ServerHandshake
from socksd.interfaces import ALLOW, ConnectContext, Decision
from socksd.isolation import isolationKeyFor
from socksd.onion import checkOnionName, isOnionName
from socksd.replies import replyFor, successFor
from socksd.server._log import commandName
from socksd.server.limits import BandwidthLimits
from socksd.server.relay import startRelay, writeNow

__all__ = ["Pipeline"]

log = Logger()


class Pipeline:
    """
    The handler of a connection whose request is in; see the module
    docstring.

    @ivar connection: the L{socksd.server.connection.SocksConnection}.
    @ivar factory: the connection's factory.
    @ivar handshake: the handshake that parsed the request (it builds the
        replies).
    @ivar request: the L{Request}.
    @ivar context: the request's L{ConnectContext}, once admitted.
    @ivar command: the command object serving the request, once chosen.
    @ivar clientEnded: the client sent EOF after its request.
    """

    __slots__ = (
        "connection",
        "factory",
        "handshake",
        "request",
        "context",
        "command",
        "clientEnded",
        "_early",
        "_earlySize",
    )

    def __init__(
        self,
        connection: Any,
        handshake: ServerHandshake,
        request: Request,
        clientEnded: bool = False,
    ) -> None:
        self.connection = connection
        self.factory = connection.factory
        self.handshake = handshake
        self.request = request
        self.context: ConnectContext | None = None
        self.command: Any = None
        self.clientEnded = clientEnded
        self._early: list[bytes] | None = []
        self._earlySize = 0
        early = handshake.unconsumed()
        if early:
            self.keepEarly(early)

    # The connection's events

    def dataReceived(self, data: bytes) -> None:
        """Bytes after the request: keep them for the destination."""
        self.keepEarly(data)

    def readConnectionLost(self) -> None:
        """
        EOF from the client: the destination gets it after the kept bytes;
        the command in progress hears of it (an abandoned BIND or CONNECT
        ends at once).
        """
        self.clientEnded = True
        command = self.command
        if command is not None:
            command.readConnectionLost()

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure) -> None:
        """The client left: the command stops what it was doing."""
        command = self.command
        if command is not None:
            command.stop()

    # Serving

    def run(self) -> None:
        """Serve the request: see the module docstring."""
        connection = self.connection
        request = self.request
        record = connection.record
        record.protocol = request.protocol
        record.commandCode = request.command
        record.destination = request.destination
        if request.user is not None:
            record.user = request.user
        connection.requestComplete()
        factory = self.factory
        commandClass = factory.commands.get((request.version, request.command))
        if commandClass is None:
            name = commandName(request.command)
            self.refuse(
                UnsupportedCommand(
                    f"command {name} is not served", command=request.command
                ),
                f"command {name} not supported",
            )
            return
        destination = request.destination
        host = destination.host
        if isinstance(host, str) and isOnionName(host):
            try:
                checkOnionName(host)
            except OnionInvalidAddress as error:
                self.refuse(error, f"invalid onion address: {error}")
                return
        admission = connection.admission
        if admission is not None and not admission.admitUser(record.user):
            self.refuse(
                GeneralFailure("too many connections for this user"),
                "too many connections for this user",
            )
            return
        self.context = ConnectContext(
            record.client,
            request.version,
            request.command,
            record.user,
            isolationKeyFor(factory.config, record.client, request.isolation, destination),
            request.credentials,
            request.pairs,
            None,
            factory.outgoingAddress,
        )
        command = commandClass(self)
        self.command = command
        decision = ALLOW
        if factory.policy is not None:
            what = command.policyCheck
            if what is not None:
                checked = self.decide(
                    command.policyDestination(),
                    what,
                    command.policyContext(self.context),
                )
                if checked is None:
                    return
                decision = checked
        if admission is not None and admission.gate is not None:
            admission.gate(self, command, decision)
            return
        command.start(decision)

    def decide(
        self,
        destination: Destination,
        what: str,
        context: ConnectContext | None = None,
    ) -> Decision | None:
        """
        Ask the factory's policy about C{destination} for this request;
        when it refuses, or fails to decide, refuse the client.

        @param what: what is asked for, for the log ("destination",
            "BIND", "UDP ASSOCIATE", "lookup").
        @param context: the context to decide with; the request's by
            default.
        @return: the decision, or L{None} after refusing.
        """
        policy = self.factory.policy
        if policy is None:
            return ALLOW
        if context is None:
            context = self.context
        try:
            decision = policy.decide(context, destination)
        except Exception as error:
            log.failure("the policy failed to decide on a {what}", what=what)
            self.refuse(error, f"policy failed: {error}")
            return None
        self.connection.record.rule = decision.rule
        if not decision.allowed:
            self.refuse(NotAllowed(decision.reason or ""), f"{what} refused by policy")
            return None
        return decision

    # Replies

    def reply(
        self, code: IntEnum, bound: Destination | None = None, options: tuple[Any, ...] = ()
    ) -> bytes:
        """The handshake's reply bytes for C{code}; the record learns it."""
        handshake = self.handshake
        self.connection.record.reply = (
            handshake.replyLabel(code) if handshake.labelsReplies else code
        )
        return handshake.reply(code, bound, options)

    def refuse(self, error: BaseException | Failure, reason: str) -> None:
        """Send the failure reply for C{error}, then close."""
        self._early = None
        self.command = None
        connection = self.connection
        if not connection.open:
            return
        code = replyFor(error, self.handshake.profile)
        connection.finish(reason, self.reply(code))

    def answer(
        self, bound: Destination | None, reason: str, options: tuple[Any, ...] = ()
    ) -> None:
        """Send a success reply (a lookup's answer, NOOP's), then close."""
        self._early = None
        self.command = None
        connection = self.connection
        if not connection.open:
            return
        code = successFor(self.handshake.profile)
        connection.finish(reason, self.reply(code, bound, options))

    def sendSuccess(
        self, bound: Destination | None, options: tuple[Any, ...] = (), now: bool = True
    ) -> None:
        """
        Send a success reply and keep the connection open (the first reply
        of a BIND, the reply of a UDP association).

        @param now: send it at once (L{writeNow}); else through the
            transport's buffer.
        """
        code = successFor(self.handshake.profile)
        data = self.reply(code, bound, options)
        transport = self.connection.transport
        if now:
            writeNow(transport, data)
        else:
            transport.write(data)

    # Bytes after the request

    def keepEarly(self, data: bytes) -> None:
        """
        Keep bytes the client sent after its request, for the destination;
        past C{maxOptimisticData}, stop reading from the client.
        """
        if not data or self._early is None:
            return
        self._early.append(data)
        self._earlySize += len(data)
        if self._earlySize >= self.factory.config.maxOptimisticData:
            self.connection.pauseReading()

    def takeEarly(self) -> bytes:
        """Take the kept bytes (and keep no more)."""
        early, self._early = self._early, None
        self._earlySize = 0
        return b"".join(early) if early else b""

    def earlyData(self) -> bytes:
        """The kept bytes, left in place."""
        early = self._early
        if not early:
            return b""
        if len(early) > 1:
            early[:] = [b"".join(early)]
        return early[0]

    def skipEarly(self, count: int) -> None:
        """Drop the first C{count} kept bytes (sent some other way)."""
        rest = self.earlyData()[count:]
        if self._early is not None:
            self._early[:] = [rest] if rest else []
            self._earlySize = len(rest)

    def handOver(self, handler: Any) -> bytes:
        """
        Make C{handler} the connection's handler (a BIND waiting for its
        peer, a UDP association's control, the DNS service), read from the
        client again, and give it the kept bytes.

        @return: the kept bytes, now the new handler's.
        """
        connection = self.connection
        early = self.takeEarly()
        # The command is done with the pipeline: no cycle outlives it.
        self.command = None
        connection.handler = handler
        if not self.clientEnded:
            connection.resumeReading()
        return early

    # The tunnel

    def startTunnel(
        self,
        upstream: Any,
        bound: Destination,
        options: tuple[Any, ...] = (),
        bandwidth: float | None = None,
        splice: bool = True,
    ) -> Any:
        """
        Send the success reply, then join the client and C{upstream} (an
        L{socksd.server.relay.UpstreamProtocol}) with the relay.

        @param bound: the address the reply reports.
        @param options: SOCKS6 options for the reply.
        @param bandwidth: the decision's bytes per second per direction.
        @param splice: the relay may use splice(2).
        @return: the relay.
        """
        connection = self.connection
        factory = self.factory
        config = factory.config
        record = connection.record
        code = successFor(self.handshake.profile)
        writeNow(connection.transport, self.reply(code, bound, options))
        kept, self._early = self._early, None
        early = b"".join(kept) if kept else b""
        # The command is done with the pipeline: no cycle outlives it.
        self.command = None
        if not self.clientEnded:
            connection.resumeReading()
        limits = factory.bandwidth
        if limits is None and bandwidth is not None:
            limits = BandwidthLimits(factory.reactor)
        splice = (
            splice
            and config.splice
            and (
                limits is None
                or not limits.meters(
                    record.client, record.user, bandwidth, connection.admission
                )
            )
        )
        if factory.extras:
            # Metrics, accounting or GSS-API: one flag for all three.
            relay = self._startWithExtras(upstream, early, splice)
        else:
            relay = startRelay(
                connection,
                upstream,
                factory.reactor,
                initialData=early,
                clientEnded=self.clientEnded,
                idleTimeout=config.idleTimeout,
                noDelay=config.tcpNoDelay,
                record=record,
                splice=splice,
            )
        if limits is not None:
            limits.throttle(
                relay, record.client, record.user, bandwidth, connection.admission
            )
        return relay

    def _startWithExtras(self, upstream: Any, early: bytes, splice: bool) -> Any:
        """
        L{startTunnel}'s relay when the factory has metrics, accounting or
        GSS-API: the framing relay for a GSS-API protected tunnel; the
        metrics and the accounting are told the tunnel opened.
        """
        connection = self.connection
        factory = self.factory
        config = factory.config
        record = connection.record
        tunnel = getattr(self.handshake, "gssapi", None)
        if tunnel is not None:
            from socksd.server.relay.gssapi import startGssapiRelay

            relay = startGssapiRelay(
                connection,
                upstream,
                factory.reactor,
                tunnel,
                initialData=early,
                clientEnded=self.clientEnded,
                idleTimeout=config.idleTimeout,
                noDelay=config.tcpNoDelay,
                record=record,
                splice=splice,
            )
        else:
            relay = startRelay(
                connection,
                upstream,
                factory.reactor,
                initialData=early,
                clientEnded=self.clientEnded,
                idleTimeout=config.idleTimeout,
                noDelay=config.tcpNoDelay,
                record=record,
                splice=splice,
            )
        metrics = factory.metrics
        if metrics is not None:
            metrics.tunnelOpened(record)
        accounting = factory.accounting
        if accounting is not None:
            try:
                accounting.tunnelOpened(record)
            except Exception:
                log.failure("accounting a tunnel's start failed")
        return relay
