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

Datagram Error messages (the UDP Error stack option) are not sent: the
option is answered "not available".
"""

from __future__ import annotations

import secrets
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from socksd.address import Destination
from socksd.errors import MalformedMessage, NotAllowed
from socksd.interfaces import ConnectContext
from socksd.replies import successFor
from socksd.server.relay import boundDestination
from socksd.wire.socks6 import (
    Socks6UdpStreamCodec,
    UdpAssociationConfirmation,
    UdpAssociationInit,
    UdpDatagram,
    buildMessage,
    decodeUdpPacket,
)

__all__ = ["serveUdpAssociate6", "Socks6Association"]

log = Logger()

_TCP = "tcp"
_UDP = "udp"


def _ip(host: Any) -> IPv4Address | IPv6Address | None:
    try:
        found = ip_address(str(host).partition("%")[0])
    except ValueError:
        return None
    mapped = getattr(found, "ipv4_mapped", None)
    return mapped if mapped is not None else found


def serveUdpAssociate6(handler: Any, context: ConnectContext) -> None:
    """
    Serve a SOCKS6 UDP ASSOCIATE for C{handler} (a L{Socks6Handler}).
    """
    connection = handler.connection
    factory = connection.factory
    if factory.policy is not None:
        try:
            checked = handler.checkPolicy(Destination(IPv4Address(0), 0), context)
        except Exception as error:
            log.failure("the policy failed to decide on a UDP ASSOCIATE")
            handler.refuse(error, f"policy failed: {error}")
            return
        if checked is None:
            handler.refuse(NotAllowed(), "UDP ASSOCIATE refused by policy")
            return
    host = getattr(connection.transport.getHost(), "host", None)
    clientHost = _ip(getattr(connection.transport.getPeer(), "host", None))
    if _ip(host) is None or clientHost is None:
        handler.refuse(
            NotAllowed("UDP ASSOCIATE needs an IP connection"),
            "UDP ASSOCIATE refused: the client did not come in over IP",
        )
        return
    association = Socks6Association(handler, context, clientHost)
    try:
        association.port = factory.reactor.listenUDP(0, association, interface=host)
    except Exception as error:
        handler.refuse(error, f"UDP ASSOCIATE could not listen on {host}: {error}")
        return
    early = b"".join(handler._early) if handler._early else b""
    handler._early = None
    connection.handler = association
    code = successFor(handler.profile)
    connection.record.reply = code
    connection.transport.write(
        handler.buildReply(code, boundDestination(association.port.getHost()))
        + buildMessage(UdpAssociationInit(association.associationId))
    )
    association.startTimer()
    if early:
        association.dataReceived(early)


class Socks6Association(DatagramProtocol):
    """
    One SOCKS6 UDP association: the UDP socket's protocol, and the handler
    of the TCP control connection.

    @ivar associationId: the 64-bit ID sent in Association Init.
    @ivar mappedTo: C{"tcp"} or C{"udp"} once the first datagram came, with
        C{clientAddress} the client's UDP address for C{"udp"}.
    """

    def __init__(self, handler: Any, context: ConnectContext, clientHost: Any) -> None:
        self.handler = handler
        self.connection = handler.connection
        self.context = context
        self.clientHost = clientHost
        self.associationId = secrets.randbits(64)
        self.mappedTo: str | None = None
        self.clientAddress: tuple[str, int] | None = None
        self.port: Any = None
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

    # The TCP control connection (a dispatcher handler)

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
        sender = _ip(host)
        if sender == self.clientHost and (
            self.mappedTo != _UDP or self.clientAddress == (host, port)
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
                if self.handler.checkPolicy(destination, self.context) is None:
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

    def _toClient(self, message: UdpDatagram) -> None:
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
