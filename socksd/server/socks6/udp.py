"""
SOCKS6 UDP ASSOCIATE (draft-11 section 7.3).

After the successful Operation Reply (whose bind address is the
association's UDP socket, on the wanted bind address: by default the
address of the interface the client came in on), the proxy sends
Association Init with a random 64-bit ID on the TCP connection.  The
client's datagrams, as Datagram messages carrying that ID, come over the
TCP connection (framed by their Message Length), to the UDP socket from the
client's host, or over DTLS to the server's DTLS relay port
(L{socksd.server.socks6.dtls}, from the client's host too).  The
association is mapped to the first of these it is seen on (for DTLS, the
conversation), and the proxy then sends Association Confirmation on TCP;
datagrams that come another way are dropped.  An empty datagram to
0.0.0.0:0 or [::]:0 only triggers the confirmation.

Each datagram's destination is checked by the policy (command UDP
ASSOCIATE), names are resolved with the factory's resolver (at most
L{MAX_PENDING} at once) and their addresses checked by the policy when it
asks, and the payload goes out of the association's socket, or of a socket
of the other address family for a destination of that family
(L{socksd.server._udp.AssociationSockets}).  Datagrams from hosts the
client sent to come back as Datagram messages, the same way the client's
arrived.  Datagrams from anyone else, and every datagram that cannot be
sent, are dropped, and logged at most once an interval
(L{socksd.server._udp.DropLog}).  The association ends with the TCP
connection, or after C{ServerConfig.udpTimeout} seconds without a datagram
(as the draft advises for a first datagram that never comes).

Port Parity (a stack option, for a request with port 0): the association's
socket gets a port of the parity asked for (L{listenWithParity}: sockets are
bound to port 0 until the kernel gives one of that parity, then adopted into
the reactor), and with "reserve" the counterpart port (p+1 for an even p,
p-1 for an odd one) is bound too and held (a L{Reservation}) until the
association ends, so that no one else can take it; a later association that
wants that port, from the holder's session (or, outside sessions, the
holder's client host), takes the held socket over (L{claimReservation}).
The Operation Reply echoes the parity and reservation done, or parity 0
(none) and reserve 0 when the port was not chosen by parity.

UDP Error (a stack option with availability 2): the association's socket
reads ICMP errors (L{socksd.server.socks6.udperror}) and each one about a
datagram the client sent, with one of the draft's error codes, goes to the
client as a Datagram Error message, the way datagrams go (on TCP, UDP or
DTLS).  The option is answered available when C{IP_RECVERR} is on, else
not available.
"""

from __future__ import annotations

import secrets
import socket
from collections import OrderedDict
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination, hostAddress
from socksd.errors import MalformedMessage
from socksd.interfaces import ALLOW, Decision
from socksd.server._udp import (
    MAX_DATAGRAM,
    MAX_PENDING,
    MAX_REMOTES,
    AssociationSockets,
    DropLog,
)
from socksd.wire.socks6 import (
    Parity,
    Socks6UdpStreamCodec,
    UdpAssociationConfirmation,
    UdpDatagram,
    UdpError,
    buildMessage,
    decodeUdpPacket,
)

__all__ = [
    "Socks6Association",
    "Reservation",
    "claimReservation",
    "listenWithParity",
    "reservationsFor",
]

log = Logger()

_TCP = "tcp"
_UDP = "udp"
_DTLS = "dtls"

#: What a policy that failed to decide amounts to: a refusal.
_FAILED = Decision(False, "the policy failed to decide")


def listenWithParity(
    reactor: Any,
    protocol: DatagramProtocol,
    interface: str,
    parity: int,
    reserve: bool,
    attempts: int = 64,
    adopt: Any = None,
) -> tuple[Any, socket.socket | None]:
    """
    Listen for UDP on C{interface}, on a port of the given parity.

    Sockets are bound to port 0 until the kernel gives a port of the
    parity (and, with C{reserve}, its counterpart can be bound too); the
    chosen socket is adopted into the reactor (C{adoptDatagramPort}); the
    others are closed.

    @param parity: L{Parity.EVEN} or L{Parity.ODD}.
    @param reserve: also bind the counterpart port (p+1 for an even p, p-1
        for an odd one).
    @param attempts: how many ports to try at most.
    @param adopt: C{adoptDatagramPort(fileno, family, protocol)} to use
        instead of the reactor's.
    @return: the listening port (L{None} when no port of the parity was
        found, or the reactor cannot adopt sockets) and the socket holding
        the counterpart (the caller closes it), or L{None}.
    """
    if getattr(reactor, "adoptDatagramPort", None) is None:
        return None, None
    if adopt is None:
        adopt = lambda fileno, family, protocol: reactor.adoptDatagramPort(
            fileno, family, protocol, maxPacketSize=MAX_DATAGRAM
        )
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    wanted = 0 if parity == Parity.EVEN else 1
    tried: list[socket.socket] = []
    try:
        for _ in range(attempts):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            tried.append(sock)
            sock.bind((interface, 0))
            number = sock.getsockname()[1]
            if number % 2 != wanted:
                continue
            counterpart = None
            if reserve:
                other = number + 1 if wanted == 0 else number - 1
                counterpart = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    counterpart.bind((interface, other))
                except OSError:
                    counterpart.close()
                    continue
            sock.setblocking(False)
            try:
                port = adopt(sock.fileno(), family, protocol)
            except BaseException:
                if counterpart is not None:
                    counterpart.close()
                raise
            return port, counterpart
        return None, None
    finally:
        for sock in tried:
            sock.close()


class Reservation:
    """
    A port held for the association that reserved it (Port Parity with
    "reserve"): the socket bound to it, and who may claim it.

    @ivar key: the C{(host, port)} held.
    @ivar socket: the socket bound to it.
    @ivar holder: the association that reserved it.
    @ivar session: the holder's SOCKS6 session, or L{None}.
    """

    __slots__ = ("key", "socket", "holder", "session")

    def __init__(
        self, key: tuple[str, int], sock: socket.socket, holder: Any, session: Any
    ) -> None:
        self.key = key
        self.socket = sock
        self.holder = holder
        self.session = session

    def mayClaim(self, session: Any, clientHost: Any) -> bool:
        """
        Whether a request may claim the port: from the holder's session
        when the holder was in one (the draft's rule), else from the
        holder's client host (socksd's choice: a port reserved outside a
        session is not anyone's to take).
        """
        if self.session is not None:
            return session is self.session
        return clientHost == self.holder.clientHost


def reservationsFor(factory: Any) -> dict[tuple[str, int], Reservation]:
    """The server's reserved ports, by C{(host, port)} (made on first use)."""
    table = getattr(factory, "socks6Reservations", None)
    if table is None:
        table = factory.socks6Reservations = {}
    return table


def claimReservation(
    reactor: Any,
    reservation: Reservation,
    protocol: DatagramProtocol,
    adopt: Any = None,
) -> Any:
    """
    Give C{reservation}'s port to C{protocol}: its socket is adopted into
    the reactor (C{adopt(fileno, family, protocol)}, the reactor's
    C{adoptDatagramPort} by default) and no longer the holder's.

    @return: the listening port.
    """
    table = reservationsFor(reservation.holder.connection.factory)
    if table.get(reservation.key) is reservation:
        del table[reservation.key]
    reservation.holder.reservation = None
    sock = reservation.socket
    try:
        if adopt is None and getattr(reactor, "adoptDatagramPort", None) is not None:
            adopt = lambda fileno, family, protocol: reactor.adoptDatagramPort(
                fileno, family, protocol, maxPacketSize=MAX_DATAGRAM
            )
        if adopt is None:
            # A reactor that cannot adopt: release the port and bind it.
            host, number = reservation.key
            sock.close()
            return reactor.listenUDP(
                number, protocol, interface=host, maxPacketSize=MAX_DATAGRAM
            )
        sock.setblocking(False)
        return adopt(sock.fileno(), sock.family, protocol)
    finally:
        sock.close()


class Socks6Association(DatagramProtocol):
    """
    One SOCKS6 UDP association: the UDP socket's protocol, and the handler
    of the TCP control connection.

    @ivar associationId: the 64-bit ID sent in Association Init.
    @ivar mappedTo: C{"tcp"}, C{"udp"} or C{"dtls"} once the first datagram
        came, with C{clientAddress} the client's UDP address for C{"udp"}
        and C{conversation} its DTLS conversation for C{"dtls"}.
    @ivar sockets: the association's socket and, once needed, the socket of
        the other address family (L{AssociationSockets}).
    @ivar relay: the server's DTLS relay
        (L{socksd.server.socks6.dtls.DtlsRelay}) the association is
        registered with, or L{None}.
    """

    noisy = False

    def __init__(self, pipeline: Any, clientHost: Any) -> None:
        self.pipeline = pipeline
        self.connection = pipeline.connection
        self.context = pipeline.context
        factory = self.connection.factory
        self.reactor = factory.reactor
        self.clientHost = clientHost
        self.associationId = secrets.randbits(64)
        self.mappedTo: str | None = None
        self.clientAddress: tuple[str, int] | None = None
        self.conversation: Any = None
        self.sockets = AssociationSockets(factory.reactor, self)
        self.relay: Any = None
        #: the counterpart port this association reserved, while it holds it.
        self.reservation: Reservation | None = None
        #: send Datagram Error messages (the client opted in, and the
        #: socket reports ICMP errors).
        self.reportErrors = False
        self._codec = Socks6UdpStreamCodec(isServer=True)
        self._remotes: OrderedDict[tuple[Any, int], None] = OrderedDict()
        self._drops = DropLog(factory.reactor, self.connection.record.client)
        self._pending = 0
        self._timer: Any = None
        self._active = False
        self._stopped = False
        #: payload bytes sent on to remote hosts, and back to the client.
        self.bytesUp = 0
        self.bytesDown = 0

    def byteCounts(self) -> tuple[int, int]:
        """Payload bytes (to remote hosts, to the client), for the log."""
        return self.bytesUp, self.bytesDown

    @property
    def port(self) -> Any:
        """The association's UDP socket (its listening port)."""
        return self.sockets.port

    @port.setter
    def port(self, port: Any) -> None:
        self.sockets.port = port

    @property
    def dropped(self) -> int:
        """Datagrams dropped since the association started."""
        return self._drops.dropped

    # The idle timer

    def startTimer(self) -> None:
        timeout = self.connection.factory.config.udpTimeout
        if timeout is not None:
            self._timer = self.reactor.callLater(timeout, self._idleCheck)

    def _idleCheck(self) -> None:
        self._timer = None
        if self._active:
            self._active = False
            self.startTimer()
            return
        self.connection.finish("UDP association idle")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.sockets.stop()
        reservation, self.reservation = self.reservation, None
        if reservation is not None:
            table = reservationsFor(self.connection.factory)
            if table.get(reservation.key) is reservation:
                del table[reservation.key]
            reservation.socket.close()
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.unregister(self)
        self.conversation = None

    # The TCP control connection (its handler)

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._codec.receiveData(data)
        except MalformedMessage as error:
            self.connection.finish(f"malformed SOCKS6 UDP message on TCP: {error}")
            return
        for message in messages:
            self._fromClient(message, _TCP, None)

    def readConnectionLost(self) -> None:
        self.connection.finish("client ended the UDP association")

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.stop()

    # The UDP socket

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self._stopped:
            return
        try:
            self._datagram(data, addr)
        except Exception:
            log.failure("handling a UDP datagram failed")

    def _datagram(self, data: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        sender = hostAddress(host)
        # The client's datagrams: from its host before the mapping, from
        # its address once mapped to UDP; once mapped to TCP or DTLS, none
        # come over UDP (so a destination on the client's own host works).
        if sender == self.clientHost and (
            self.mappedTo is None
            or (self.mappedTo == _UDP and self.clientAddress == (host, port))
        ):
            try:
                message = decodeUdpPacket(data)
            except MalformedMessage as error:
                self._drop(f"malformed datagram from the client: {error}")
                return
            if isinstance(message, UdpDatagram):
                self._fromClient(message, _UDP, (host, port))
            return
        if (sender, port) in self._remotes:
            self._active = True
            if self._toClient(
                UdpDatagram(self.associationId, Destination(sender, port), data)
            ):
                self.bytesDown += len(data)
            return
        self._drop(f"sender {host}:{port} is neither the client nor a remote")

    def dtlsDatagram(self, message: UdpDatagram, conversation: Any) -> None:
        """
        A Datagram message with this association's ID, on a DTLS
        conversation of the server's DTLS relay: the same checks as over
        plain UDP (the client's host only, the first transport seen maps
        the association), then the same relay.

        @param conversation: the DTLS conversation it came on (its
            C{peerHost}, and C{write(data)} for the answers).
        """
        if self._stopped:
            return
        if conversation.peerHost != self.clientHost:
            self._drop(
                f"DTLS datagram from {conversation.peerHost}, not the client's host"
            )
            return
        self._fromClient(message, _DTLS, conversation)

    def datagramErrorReceived(
        self, errorCode: int, address: tuple[str, int], reporter: Any
    ) -> None:
        """
        An ICMP error about a datagram the association sent (from
        L{socksd.server.socks6.udperror.ErrorReportingPort}): a Datagram
        Error message to the client, when it opted in and sent to that
        destination.
        """
        if self._stopped or not self.reportErrors:
            return
        destination = hostAddress(address[0])
        if destination is None or (destination, address[1]) not in self._remotes:
            return
        self._toClient(
            UdpError(
                self.associationId,
                Destination(destination, address[1]),
                errorCode,
                reporter,
            )
        )

    # Both ways

    def _drop(self, why: str) -> None:
        """Count a dropped datagram; log now and then (L{DropLog})."""
        self._drops(why)

    def _fromClient(self, message: UdpDatagram, via: str, where: Any) -> None:
        if message.associationId != self.associationId:
            self._drop(f"datagram over {via} for another association")
            return
        if self.mappedTo is None:
            self.mappedTo = via
            if via == _UDP:
                self.clientAddress = where
            elif via == _DTLS:
                self.conversation = where
                where.attach(self)
            self.connection.transport.write(
                buildMessage(UdpAssociationConfirmation(self.associationId))
            )
        elif self.mappedTo != via or (
            via == _DTLS and self.conversation is not where
        ):
            self._drop(f"datagram over {via}, but the association is mapped")
            return
        self._active = True
        destination = message.address
        host = destination.host
        if not message.payload and destination.port == 0:
            if isinstance(host, (IPv4Address, IPv6Address)) and host.is_unspecified:
                return
        decision = ALLOW
        policy = self.connection.factory.policy
        if policy is not None:
            try:
                decision = policy.decide(self.context, destination)
            except Exception:
                log.failure("the policy failed to decide on a datagram")
                decision = _FAILED
            if not decision.allowed:
                self._drop(f"destination {destination} refused by policy")
                return
        if not isinstance(host, str):
            self._send(host, destination.port, message, destination, decision, False)
            return
        if self._pending >= MAX_PENDING:
            self._drop(f"too many datagrams waiting for names ({destination})")
            return
        self._pending += 1
        resolving = maybeDeferred(self.connection.factory.resolver.resolve, host)

        def resolved(addresses: list[Any]) -> None:
            self._pending -= 1
            if self._stopped:
                return
            address = _choose(addresses, self.clientHost.version)
            if address is None:
                self._drop(f"{host} has no address")
                return
            self._send(address, destination.port, message, destination, decision, True)

        def failed(failure: Failure) -> None:
            self._pending -= 1
            self._drop(f"{host} not resolved: {failure.getErrorMessage()}")

        resolving.addCallbacks(resolved, failed)
        resolving.addErrback(lambda f: log.failure("sending a UDP datagram failed", f))

    def _send(
        self,
        address: Any,
        port: int,
        message: UdpDatagram,
        destination: Destination,
        decision: Decision,
        resolved: bool,
    ) -> None:
        if self._stopped or self.port is None:
            return
        policy = self.connection.factory.policy
        if resolved and policy is not None and decision.checkAddresses:
            try:
                decision = policy.decideResolved(
                    self.context, destination, [address], decision
                )
            except Exception:
                log.failure("the policy failed to decide on a datagram")
                decision = _FAILED
            if not decision.allowed:
                self._drop(f"resolved address {address} refused by policy")
                return
        address = hostAddress(address)
        if address is None or port == 0:
            self._drop("destination port 0 or bad address")
            return
        try:
            self.sockets.write(message.payload, address, port)
        except Exception as error:
            # OSError, or Twisted's InvalidAddressError (not an OSError).
            self._drop(f"sending to {address}:{port} failed: {error}")
            return
        self.bytesUp += len(message.payload)
        key = (address, port)
        remotes = self._remotes
        remotes[key] = None
        remotes.move_to_end(key)
        if len(remotes) > MAX_REMOTES:
            remotes.popitem(last=False)

    def _toClient(self, message: UdpDatagram | UdpError) -> bool:
        """Send C{message} to the client the way it is mapped; C{True} if sent."""
        try:
            data = buildMessage(message)
        except MalformedMessage as error:
            self._drop(f"cannot frame the datagram for the client: {error}")
            return False
        via = self.mappedTo
        if via == _TCP:
            connection = self.connection
            if connection.connected and not connection.closing:
                connection.transport.write(data)
                return True
        elif via == _UDP and self.clientAddress is not None:
            try:
                self.port.write(data, self.clientAddress)
                return True
            except Exception as error:
                self._drop(f"sending back to the client failed: {error}")
        elif via == _DTLS and self.conversation is not None:
            if self.conversation.write(data):
                return True
            self._drop(
                f"a datagram of {len(data)} bytes cannot go back over DTLS "
                "(larger than one record, or the conversation ended)"
            )
        return False


def _choose(addresses: list[Any], version: int) -> Any:
    """
    The first of C{addresses} of the association socket's family
    (C{version}), else the first (sent from the socket of the other
    family), else L{None}.
    """
    for address in addresses:
        if address.version == version:
            return address
    return addresses[0] if addresses else None
