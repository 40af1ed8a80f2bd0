"""
SOCKS6 UDP ASSOCIATE (draft-11 section 7.3).

After the successful Operation Reply (whose bind address is the
association's UDP socket, on the address of the interface the client came
in on), the proxy sends Association Init with a random 64-bit ID on the TCP
connection.  The client's datagrams, as Datagram messages carrying that ID,
come either over the TCP connection (framed by their Message Length) or to
the UDP socket from the client's host.  The association is mapped to the
first of the two it is seen on, and the proxy then sends Association
Confirmation on TCP; datagrams from the other are dropped.  An empty
datagram to 0.0.0.0:0 or [::]:0 only triggers the confirmation.

Each datagram's destination is checked by the policy (command UDP
ASSOCIATE), names are resolved with the factory's resolver, and the payload
goes out of the association's socket.  Datagrams from hosts the client sent
to come back as Datagram messages, the same way the client's arrived.
Datagrams from anyone else are dropped.  The association ends with the TCP
connection, or after C{ServerConfig.udpTimeout} seconds without a datagram
(as the draft advises for a first datagram that never comes).

Port Parity (a stack option, for a request with port 0): the association's
socket gets a port of the parity asked for (L{listenWithParity}: sockets are
bound to port 0 until the kernel gives one of that parity, then adopted into
the reactor), and with "reserve" the counterpart port (p+1 for an even p,
p-1 for an odd one) is bound too and held, unused, until the association
ends, so that no one else can take it.  The Operation Reply echoes the
parity and reservation done, or parity 0 (none) and reserve 0 when the
port was not chosen by parity.

UDP Error (a stack option with availability 2): the association's socket
reads ICMP errors (L{socksd.server.socks6.udperror}) and each one about a
datagram the client sent, with one of the draft's error codes, goes to the
client as a Datagram Error message, the way datagrams go (on TCP or UDP).
The option is answered available when C{IP_RECVERR} is on, else not
available.
"""

from __future__ import annotations

import secrets
import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination, hostAddress
from socksd.errors import MalformedMessage
from socksd.wire.socks6 import (
    Parity,
    Socks6UdpStreamCodec,
    UdpAssociationConfirmation,
    UdpDatagram,
    UdpError,
    buildMessage,
    decodeUdpPacket,
)

__all__ = ["Socks6Association", "listenWithParity"]

log = Logger()

_TCP = "tcp"
_UDP = "udp"


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
        adopt = reactor.adoptDatagramPort
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


class Socks6Association(DatagramProtocol):
    """
    One SOCKS6 UDP association: the UDP socket's protocol, and the handler
    of the TCP control connection.

    @ivar associationId: the 64-bit ID sent in Association Init.
    @ivar mappedTo: C{"tcp"} or C{"udp"} once the first datagram came, with
        C{clientAddress} the client's UDP address for C{"udp"}.
    """

    def __init__(self, pipeline: Any, clientHost: Any) -> None:
        self.pipeline = pipeline
        self.connection = pipeline.connection
        self.context = pipeline.context
        self.clientHost = clientHost
        self.associationId = secrets.randbits(64)
        self.mappedTo: str | None = None
        self.clientAddress: tuple[str, int] | None = None
        self.port: Any = None
        #: the socket holding the reserved counterpart port, if any.
        self.reserved: socket.socket | None = None
        #: send Datagram Error messages (the client opted in, and the
        #: socket reports ICMP errors).
        self.reportErrors = False
        self._codec = Socks6UdpStreamCodec(isServer=True)
        self._remotes: set[tuple[Any, int]] = set()
        self._timer: Any = None
        self._active = False
        self._stopped = False

    # The idle timer

    def startTimer(self) -> None:
        timeout = self.connection.factory.config.udpTimeout
        if timeout is not None:
            self._timer = self.connection.factory.reactor.callLater(
                timeout, self._idleCheck
            )

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
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()
        reserved, self.reserved = self.reserved, None
        if reserved is not None:
            reserved.close()

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
        host, port = addr[0], addr[1]
        sender = hostAddress(host)
        # The client's datagrams: from its host before the mapping, from
        # its address once mapped to UDP; once mapped to TCP, none come
        # over UDP (so a destination on the client's own host works).
        if sender == self.clientHost and (
            self.mappedTo is None
            or (self.mappedTo == _UDP and self.clientAddress == (host, port))
        ):
            try:
                message = decodeUdpPacket(data)
            except MalformedMessage:
                return
            if isinstance(message, UdpDatagram):
                self._fromClient(message, _UDP, (host, port))
            return
        if (sender, port) in self._remotes:
            self._active = True
            self._toClient(
                UdpDatagram(self.associationId, Destination(sender, port), data)
            )

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

    def _fromClient(
        self, message: UdpDatagram, via: str, address: tuple[str, int] | None
    ) -> None:
        if message.associationId != self.associationId:
            return
        if self.mappedTo is None:
            self.mappedTo = via
            self.clientAddress = address
            self.connection.transport.write(
                buildMessage(UdpAssociationConfirmation(self.associationId))
            )
        elif self.mappedTo != via:
            return
        self._active = True
        destination = message.address
        host = destination.host
        if not message.payload and destination.port == 0:
            if isinstance(host, (IPv4Address, IPv6Address)) and host.is_unspecified:
                return
        policy = self.connection.factory.policy
        if policy is not None:
            try:
                if not policy.decide(self.context, destination).allowed:
                    return
            except Exception:
                log.failure("the policy failed to decide on a datagram")
                return
        if isinstance(host, str):
            resolving = maybeDeferred(self.connection.factory.resolver.resolve, host)
            resolving.addCallback(
                lambda addresses: (
                    self._send(addresses[0], destination.port, message)
                    if addresses
                    else None
                )
            )
            resolving.addErrback(lambda failure: None)
        else:
            self._send(host, destination.port, message)

    def _send(self, address: Any, port: int, message: UdpDatagram) -> None:
        if self._stopped or self.port is None:
            return
        self._remotes.add((address, port))
        try:
            self.port.write(message.payload, (str(address), port))
        except Exception as error:
            log.debug("sending a datagram failed: {error}", error=error)

    def _toClient(self, message: UdpDatagram | UdpError) -> None:
        data = buildMessage(message)
        if self.mappedTo == _TCP:
            connection = self.connection
            if connection.connected and not connection.closing:
                connection.transport.write(data)
        elif self.mappedTo == _UDP and self.clientAddress is not None:
            try:
                self.port.write(data, self.clientAddress)
            except Exception as error:
                log.debug("sending a datagram failed: {error}", error=error)
