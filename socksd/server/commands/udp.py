"""
UDP ASSOCIATE (RFC 1928 section 7), for SOCKS5.

L{Socks5UdpAssociate} is the command.  It opens one UDP socket per association, on the address of
the interface the client came in on, and answers with that socket's address
and port.  The client's TCP connection becomes the control connection: when
it closes (or sends EOF), the association ends; so does an association that
carries no datagram for C{ServerConfig.udpTimeout} seconds.

Datagrams on the association's socket:

  - from the client (the control connection's peer address, and the port
    the request named when it was not 0; else the port of the client's first
    datagram): they carry the RFC 1928 header, taken apart with
    L{socksd.wire.socks5.parseUdpDatagram}.  A datagram with FRAG other than
    0 (socksd does not reassemble), or a malformed one, is dropped.  The
    policy decides on each destination (command C{udp}); names are resolved
    with the factory's resolver behind a L{socksd.resolve.CachingResolver},
    and at most L{MAX_PENDING} datagrams wait for names at once (more are
    dropped).  The payload goes to the destination;
  - from a host the client sent to: the payload goes back to the client
    behind a header naming that host (L{socksd.wire.socks5.buildUdpDatagram});
  - from anyone else: dropped, and logged at most once every
    L{LOG_INTERVAL} seconds per association, with a count.

A destination of the other address family than the association's socket
(an IPv6 host for an association on 127.0.0.1) is reached through a second
socket of that family, made on the first such datagram and closed with the
association (L{socksd.server._udp.AssociationSockets}).  Every datagram
that cannot be sent (the system refuses it, the family cannot be used
here) is dropped and logged the same rate-limited way, never with a
traceback.
"""

from __future__ import annotations

from collections import OrderedDict
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination, hostAddress
from socksd.errors import MalformedMessage, NotAllowed
from socksd.interfaces import ALLOW, ConnectContext, Decision
from socksd.resolve import CachingResolver
from socksd.server.commands._base import Command
from socksd.server.commands.bind import (
    listenRefusal,
    wantedAddress,
    wantedDestination,
)
from socksd.replies import successFor
from socksd.server._udp import (
    LOG_INTERVAL,
    MAX_DATAGRAM,
    MAX_PENDING,
    MAX_REMOTES,
    AssociationSockets,
    DropLog,
)
from socksd.server.relay import boundDestination
from socksd.server.socks6.stack import applyStackOptions
from socksd.server.socks6.udp import (
    Reservation,
    Socks6Association,
    claimReservation,
    listenWithParity,
    reservationsFor,
)
from socksd.server.socks6.udperror import adoptReportingErrors, listenReportingErrors
from socksd.wire.socks6 import (
    Availability,
    Parity,
    PortParityOption,
    StackLeg,
    UdpAssociationInit,
    UdpErrorOption,
    buildMessage,
)
from socksd.wire.socks5 import buildUdpDatagram, parseUdpDatagram

__all__ = [
    "Socks5UdpAssociate",
    "Socks6UdpAssociate",
    "UdpAssociation",
    "UdpControl",
    "MAX_PENDING",
    "MAX_REMOTES",
    "LOG_INTERVAL",
]

log = Logger()


#: What a policy that failed to decide amounts to: a refusal.
_FAILED = Decision(False, "the policy failed to decide")


class Socks5UdpAssociate(Command):
    """
    SOCKS5's UDP ASSOCIATE: see the module docstring.

    The request's destination is where the client will send from; its
    port, when not 0, is the only port the client may use.  Its address is
    not trusted: only the control connection's peer address may use the
    association.  The policy decides on each datagram, not on the request.
    """

    policyCheck = None

    __slots__ = ()

    def start(self, decision: Decision) -> None:
        pipeline = self.pipeline
        connection = pipeline.connection
        factory = pipeline.factory
        transport = connection.transport
        host = getattr(transport.getHost(), "host", None)
        clientHost = hostAddress(getattr(transport.getPeer(), "host", None))
        if hostAddress(host) is None or clientHost is None:
            pipeline.refuse(
                NotAllowed("UDP ASSOCIATE needs an IP connection"),
                "UDP ASSOCIATE refused: the client did not come in over IP",
            )
            return
        association = UdpAssociation(
            pipeline, clientHost, pipeline.request.destination.port or None
        )
        try:
            association.port = factory.reactor.listenUDP(
                0, association, interface=host, maxPacketSize=MAX_DATAGRAM
            )
        except Exception as error:
            pipeline.refuse(error, f"UDP ASSOCIATE could not listen on {host}: {error}")
            return
        pipeline.handOver(UdpControl(association))
        connection.record.relay = association
        pipeline.sendSuccess(boundDestination(association.port.getHost()), now=False)
        association.startTimer()


class UdpControl:
    """
    The control connection's handler during an association: what the client
    sends is ignored; its EOF or close ends the association.
    """

    __slots__ = ("association",)

    def __init__(self, association: UdpAssociation) -> None:
        self.association = association

    def dataReceived(self, data: bytes) -> None:
        """The control connection carries nothing after the reply: ignore."""

    def readConnectionLost(self) -> None:
        """EOF from the client ends the association."""
        self.association.connection.finish("client closed the UDP control connection")

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure) -> None:
        """The control connection is gone: close the socket."""
        self.association.connection.record.setReason("UDP control connection closed")
        self.association.stop()


class UdpAssociation(DatagramProtocol):
    """
    One association's UDP socket; see the module docstring.

    @ivar port: the listening UDP port.
    @ivar sockets: the listening port and, once needed, the socket of the
        other address family (L{AssociationSockets}).
    @ivar clientHost: the only address the client may send from.
    @ivar clientPort: the client's port, once known.
    @ivar bytesUp: payload bytes sent on to destinations.
    @ivar bytesDown: payload bytes sent back to the client.
    @ivar dropped: datagrams dropped since the association started.
    """

    noisy = False

    def __init__(
        self,
        pipeline: Any,
        clientHost: IPv4Address | IPv6Address,
        clientPort: int | None,
    ) -> None:
        self.pipeline = pipeline
        self.connection = pipeline.connection
        factory = pipeline.factory
        self.reactor = factory.reactor
        self.policy = factory.policy
        self.context = pipeline.context
        self.resolver = CachingResolver(
            factory.resolver, factory.reactor, maxEntries=64
        )
        self.timeout = factory.config.udpTimeout
        self.clientHost = clientHost
        self.clientPort = clientPort
        self.sockets = AssociationSockets(factory.reactor, self)
        self.bytesUp = 0
        self.bytesDown = 0
        self._drops = DropLog(factory.reactor, self.connection.record.client)
        self._remotes: OrderedDict[tuple[Any, int], None] = OrderedDict()
        self._pending = 0
        self._lastActivity = self.reactor.seconds()
        self._timer: Any = None
        self._stopped = False

    @property
    def port(self) -> Any:
        """The listening UDP port."""
        return self.sockets.port

    @port.setter
    def port(self, port: Any) -> None:
        self.sockets.port = port

    @property
    def dropped(self) -> int:
        """Datagrams dropped since the association started."""
        return self._drops.dropped

    def byteCounts(self) -> tuple[int, int]:
        """Payload bytes (to destinations, to the client), for the log."""
        return self.bytesUp, self.bytesDown

    # Lifetime

    def startTimer(self) -> None:
        """Start the idle timer, if there is a timeout."""
        if self.timeout is not None:
            self._timer = self.reactor.callLater(self.timeout, self._idleCheck)

    def _idleCheck(self) -> None:
        self._timer = None
        assert self.timeout is not None
        idle = self.reactor.seconds() - self._lastActivity
        if idle >= self.timeout:
            self.connection.finish("UDP association idle timeout")
        else:
            self._timer = self.reactor.callLater(self.timeout - idle, self._idleCheck)

    def stop(self) -> None:
        """End the association: close the socket, stop the timer."""
        if self._stopped:
            return
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.sockets.stop()

    # Datagrams

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Sort a datagram: from the client, from a remote, or dropped."""
        if self._stopped:
            return
        try:
            host, port = hostAddress(addr[0]), addr[1]
            if host == self.clientHost and port == self.clientPort:
                self._fromClient(data, addr)
            elif (host, port) in self._remotes:
                self._fromRemote(data, host, port)
            elif host == self.clientHost and self.clientPort is None:
                self.clientPort = port
                self._fromClient(data, addr)
            else:
                self._drop(f"sender {addr[0]}:{addr[1]} is not the client")
        except Exception:
            log.failure("handling a UDP datagram failed")

    def _drop(self, why: str) -> None:
        """Count a dropped datagram; log now and then (L{DropLog})."""
        self._drops(why)

    def _fromClient(self, data: bytes, addr: Any) -> None:
        self._lastActivity = self.reactor.seconds()
        try:
            frag, destination, payload = parseUdpDatagram(data)
        except MalformedMessage as error:
            self._drop(f"malformed datagram from the client: {error}")
            return
        if frag != 0:
            self._drop(f"fragment (FRAG {frag}) from the client")
            return
        decision = ALLOW
        if self.policy is not None:
            try:
                decision = self.policy.decide(self.context, destination)
            except Exception:
                log.failure("the policy failed to decide on a UDP datagram")
                decision = _FAILED
            if not decision.allowed:
                self._drop(f"destination {destination} refused by policy")
                return
        host = destination.host
        if not isinstance(host, str):
            self._send(host, destination.port, payload, destination, decision, False)
            return
        if self._pending >= MAX_PENDING:
            self._drop(f"too many datagrams waiting for names ({destination})")
            return
        self._pending += 1
        resolving = maybeDeferred(self.resolver.resolve, host)

        def resolved(addresses: list[Any]) -> None:
            self._pending -= 1
            if self._stopped:
                return
            address = self._choose(addresses)
            if address is None:
                self._drop(f"{host} has no address")
                return
            self._send(address, destination.port, payload, destination, decision, True)

        def failed(failure: Failure) -> None:
            self._pending -= 1
            self._drop(f"{host} not resolved: {failure.getErrorMessage()}")

        resolving.addCallbacks(resolved, failed)
        resolving.addErrback(lambda f: log.failure("sending a UDP datagram failed", f))

    def _choose(self, addresses: list[Any]) -> Any:
        """
        The first address of the listening socket's family, else the first
        address (sent from the socket of the other family).
        """
        version = self.clientHost.version
        for address in addresses:
            if address.version == version:
                return address
        return addresses[0] if addresses else None

    def _send(
        self,
        address: Any,
        port: int,
        payload: bytes,
        destination: Destination,
        decision: Decision,
        resolved: bool,
    ) -> None:
        policy = self.policy
        if resolved and policy is not None and decision.checkAddresses:
            try:
                decision = policy.decideResolved(
                    self.context, destination, [address], decision
                )
            except Exception:
                log.failure("the policy failed to decide on a UDP datagram")
                decision = _FAILED
            if not decision.allowed:
                self._drop(f"resolved address {address} refused by policy")
                return
        address = hostAddress(address)
        if address is None or port == 0:
            self._drop("destination port 0 or bad address")
            return
        try:
            self.sockets.write(payload, address, port)
        except Exception as error:
            # OSError, or Twisted's InvalidAddressError (not an OSError).
            self._drop(f"sending to {address}:{port} failed: {error}")
            return
        self.bytesUp += len(payload)
        key = (address, port)
        remotes = self._remotes
        remotes[key] = None
        remotes.move_to_end(key)
        if len(remotes) > MAX_REMOTES:
            remotes.popitem(last=False)

    def _fromRemote(self, data: bytes, host: Any, port: int) -> None:
        self._lastActivity = self.reactor.seconds()
        try:
            datagram = buildUdpDatagram(Destination(host, port), data)
            self.sockets.write(datagram, self.clientHost, self.clientPort)
        except Exception as error:
            self._drop(f"sending back to the client failed: {error}")
            return
        self.bytesDown += len(data)


class Socks6UdpAssociate(Command):
    """
    SOCKS6's UDP ASSOCIATE: see L{socksd.server.socks6.udp}.  The wanted
    address and port are honoured (L{wantedAddress}: the proxy's own
    addresses only), and the policy decides on them as a wanted bind
    address, then on each datagram.  A wanted port that another association
    of the client reserved (Port Parity) is handed over.
    """

    policyCheck = "UDP ASSOCIATE"

    __slots__ = ()

    def policyDestination(self) -> Destination:
        """The address and port the association will use."""
        return wantedDestination(self.pipeline)

    def policyContext(self, context: ConnectContext) -> ConnectContext:
        """The destination is a wanted bind address."""
        return context._replace(bindRequest=True)

    def start(self, decision: Decision) -> None:
        pipeline = self.pipeline
        connection = pipeline.connection
        factory = pipeline.factory
        request = pipeline.request
        stackOptions = request.socks6.stackOptions
        options = applyStackOptions(
            stackOptions, None, request.destination, factory.upstream
        )
        host = getattr(connection.transport.getHost(), "host", None)
        clientHost = hostAddress(getattr(connection.transport.getPeer(), "host", None))
        if hostAddress(host) is None or clientHost is None:
            pipeline.refuse(
                NotAllowed("UDP ASSOCIATE needs an IP connection"),
                "UDP ASSOCIATE refused: the client did not come in over IP",
            )
            return
        wanted = wantedAddress(pipeline, host, "UDP ASSOCIATE")
        if wanted is None:
            return
        host, wantedPort = wanted
        reservation = None
        if wantedPort:
            reservation = reservationsFor(factory).get((host, wantedPort))
            if reservation is not None and not reservation.mayClaim(
                request.session, clientHost
            ):
                pipeline.refuse(
                    NotAllowed(f"port {wantedPort} is reserved"),
                    "UDP ASSOCIATE refused: the wanted port is reserved",
                )
                return
        association = Socks6Association(pipeline, clientHost)
        parity = _requestedParity(request)
        wantsErrors = _wantsErrors(stackOptions)
        reactor = factory.reactor
        adopt = None
        if wantsErrors:
            adopt = lambda fileno, family, protocol: adoptReportingErrors(
                reactor, fileno, family, protocol
            )
        try:
            port = None
            if reservation is not None:
                port = claimReservation(reactor, reservation, association, adopt)
            elif parity is not None:
                port, reserved = listenWithParity(
                    reactor,
                    association,
                    host,
                    parity.parity,
                    bool(parity.reserve),
                    adopt=adopt,
                )
                if port is not None:
                    options = _replaced(
                        options,
                        PortParityOption(
                            StackLeg.PROXY_REMOTE, parity.parity, parity.reserve
                        ),
                    )
                if reserved is not None:
                    key = (host, reserved.getsockname()[1])
                    association.reservation = reservationsFor(factory)[key] = (
                        Reservation(key, reserved, association, request.session)
                    )
            if port is None and wantsErrors:
                port = listenReportingErrors(reactor, association, host, wantedPort)
            if port is None:
                port = reactor.listenUDP(
                    wantedPort, association, interface=host, maxPacketSize=MAX_DATAGRAM
                )
            association.port = port
            if wantsErrors and getattr(port, "reportingErrors", False):
                association.reportErrors = True
                options = _replaced(
                    options,
                    UdpErrorOption(StackLeg.PROXY_REMOTE, Availability.AVAILABLE),
                )
        except Exception as error:
            association.stop()
            pipeline.refuse(
                listenRefusal(error, host, wantedPort),
                f"UDP ASSOCIATE could not listen on {host}: {error}",
            )
            return
        relay = getattr(factory, "socks6Dtls", None)
        if relay is not None:
            relay.register(association)
        early = pipeline.handOver(association)
        connection.record.relay = association
        code = successFor(request.profile)
        connection.transport.write(
            pipeline.reply(code, boundDestination(association.port.getHost()), options)
            + buildMessage(UdpAssociationInit(association.associationId))
        )
        association.startTimer()
        if early:
            association.dataReceived(early)


def _replaced(options: tuple[Any, ...], option: Any) -> tuple[Any, ...]:
    """C{options} with C{option} in place of those of its type."""
    kind = type(option)
    return tuple(option if isinstance(o, kind) else o for o in options)


def _requestedParity(request: Any) -> PortParityOption | None:
    """
    @return: the request's Port Parity option on the proxy-remote leg
        asking for a parity, when the request's port is 0 (else the draft
        says to ignore it).
    """
    if request.destination.port != 0:
        return None
    for option in request.socks6.stackOptions:
        if (
            isinstance(option, PortParityOption)
            and option.appliesToRemote
            and option.parity != Parity.NONE
        ):
            return option
    return None


def _wantsErrors(stackOptions: Any) -> bool:
    """Whether the request asks for Datagram Error messages."""
    return any(
        isinstance(option, UdpErrorOption)
        and option.appliesToRemote
        and option.availability == Availability.AVAILABLE
        for option in stackOptions
    )
