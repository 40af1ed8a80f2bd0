"""
SOCKS6's DTLS relay port (draft-11 section 7.3): UDP associations whose
datagrams travel over DTLS 1.2 between the client and the proxy.

The draft lets a proxy be "configured with [...] a port used for relaying
datagrams over DTLS": one port for every association, as its plain UDP
port would be.  A client that has a UDP association (made over TCP as
usual, with its random 64-bit Association ID) opens a DTLS conversation with
that port and sends the draft's Datagram messages in it, one per record;
the first one with the association's ID maps the association to that
conversation (the draft's "DTLS connection"), the proxy sends Association
Confirmation on TCP, and from then on the association's datagrams, both
ways, go over that conversation, with exactly the checks and the relay of
plain UDP (L{socksd.server.socks6.udp.Socks6Association.dtlsDatagram}):
the client's host only, the first transport seen wins, the policy on each
destination.  Nothing in the Operation Reply names the DTLS port (the
draft has no field for it; its Bind Address is the association's own
socket, where remote hosts send): the client is configured with it.

L{DtlsRelay} is the port's protocol:

  - a new peer gets no state until it proves it receives at its address:
    its ClientHello goes to one shared, stateless listener
    (C{DTLSv1_listen}), which answers with a HelloVerifyRequest carrying a
    cookie (an HMAC of the peer's address and the minute under a secret of
    the relay, valid two minutes); only a ClientHello that returns a valid
    cookie gets a conversation, so spoofed handshakes cost nothing;
  - conversations are bounded: L{MAX_CONVERSATIONS} in all and
    L{MAX_PER_HOST} per client host (more ClientHellos are dropped); a
    handshake must end within C{handshakeTimeout} seconds; a conversation
    that carries no association is closed after C{idleTimeout} seconds
    without a datagram; one whose associations all ended is closed at
    once; when a conversation ends (close_notify, an error), the
    associations mapped to it end too (their TCP connections close);
  - datagrams that cannot be used (not a ClientHello from a new peer, a
    message that does not parse, an unknown Association ID, an association
    of another client host) are dropped and logged at most once every
    L{socksd.server._udp.LOG_INTERVAL} seconds.

The port is given as C{dtls:PORT:interface=ADDR:privateKey=KEY.pem
[:certKey=CERT.pem][:extraCertChain=CHAIN.pem]} (L{parseDtlsDescription};
the keywords are those of Twisted's C{ssl:} server endpoint), and
C{twistd socksd --socks6-dtls-listen} takes it.  This is socksd's own
parser, not a Twisted endpoint plugin: Twisted's endpoint strings describe
stream endpoints, and a C{dtls:} parser registered there would let
C{--listen dtls:...} and any C{serverFromString} accept a description that
cannot make a stream port.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from socksd.address import hostAddress
from socksd.dtls import (
    DEFAULT_MTU,
    MAX_DATAGRAM,
    DtlsChannel,
    dtlsMissing,
    serverContext,
)
from socksd.errors import MalformedMessage
from socksd.server._udp import DropLog
from socksd.wire.socks6 import UdpDatagram, decodeUdpPacket

__all__ = [
    "DtlsRelay",
    "DtlsConversation",
    "DtlsSettings",
    "parseDtlsDescription",
    "MAX_CONVERSATIONS",
    "MAX_PER_HOST",
    "HANDSHAKE_TIMEOUT",
]

log = Logger()

#: The most DTLS conversations a relay holds at once.
MAX_CONVERSATIONS = 1024
#: The most DTLS conversations one client host holds at once.
MAX_PER_HOST = 32
#: Seconds a DTLS handshake may take, from the cookie's return.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a cookie is valid for at least (it is valid for two such steps).
COOKIE_STEP = 60.0
#: The keywords of a C{dtls:} description (those of Twisted's C{ssl:}).
_KEYWORDS = frozenset({"interface", "privateKey", "certKey", "extraCertChain"})
#: DTLS content type 22 (handshake), handshake type 1 (ClientHello).
_HANDSHAKE = 22
_CLIENT_HELLO = 1


@dataclass(frozen=True, slots=True)
class DtlsSettings:
    """
    A DTLS relay port, as C{--socks6-dtls-listen} describes it.

    @ivar port: the UDP port (0: any).
    @ivar interface: the address to listen on (C{""}: every IPv4 one).
    @ivar privateKey: the PEM file of the private key.
    @ivar certKey: the PEM file of the certificate (the key's file when
        L{None}).
    @ivar extraCertChain: a PEM file of intermediate certificates, or
        L{None}.
    """

    port: int
    interface: str
    privateKey: str
    certKey: str | None = None
    extraCertChain: str | None = None

    def context(self) -> Any:
        """A fresh server context with this certificate (see L{serverContext})."""
        return serverContext(self.privateKey, self.certKey, self.extraCertChain)


def parseDtlsDescription(description: str) -> DtlsSettings:
    """
    Parse C{dtls:PORT:interface=ADDR:privateKey=KEY.pem[:certKey=CERT.pem]
    [:extraCertChain=CHAIN.pem]}, with Twisted's endpoint-string quoting
    (C{\\:} for a colon in a value, as in C{interface=\\:\\:1}), and check
    that the key and certificate load.

    @raise ValueError: with a message that names what is wrong: not a
        C{dtls:} description, a bad port or keyword, no C{privateKey}, files
        that do not load, or no DTLS here (pyOpenSSL missing: it names
        C{socksd[tls]}).
    """
    from twisted.internet import endpoints

    missing = dtlsMissing()
    if missing is not None:
        raise ValueError(missing)
    try:
        args, kwargs = endpoints._parse(description)
    except Exception as error:
        raise ValueError(f"cannot parse {description!r}: {error}") from None
    if not args or args[0] != "dtls":
        raise ValueError(f"{description!r} is not a dtls:PORT:... description")
    if len(args) != 2:
        raise ValueError("expected dtls:PORT:interface=ADDR:privateKey=KEY.pem")
    try:
        port = int(args[1])
        if not 0 <= port <= 0xFFFF:
            raise ValueError()
    except ValueError:
        raise ValueError(f"{args[1]!r} is not a port number") from None
    unknown = set(kwargs) - _KEYWORDS
    if unknown:
        raise ValueError(
            f"unknown keyword {sorted(unknown)[0]!r} "
            f"(known: {', '.join(sorted(_KEYWORDS))})"
        )
    if not kwargs.get("privateKey"):
        raise ValueError("privateKey=KEY.pem is required")
    interface = kwargs.get("interface", "")
    if interface and hostAddress(interface) is None:
        raise ValueError(f"interface={interface!r} is not an IP address")
    settings = DtlsSettings(
        port,
        interface,
        kwargs["privateKey"],
        kwargs.get("certKey"),
        kwargs.get("extraCertChain"),
    )
    for path in filter(None, (settings.privateKey, settings.certKey, settings.extraCertChain)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None
    try:
        settings.context()
    except (OSError, ValueError) as error:
        raise ValueError(str(error)) from None
    return settings


def _looksLikeClientHello(data: bytes) -> bool:
    """A DTLS handshake record (epoch 0) whose message is a ClientHello."""
    return (
        len(data) > 25
        and data[0] == _HANDSHAKE
        and data[3:5] == b"\x00\x00"
        and data[13] == _CLIENT_HELLO
    )


class DtlsConversation:
    """
    One client's DTLS conversation with the relay.

    @ivar address: the client's C{(host, port)}.
    @ivar peerHost: the client's host, as an address object.
    @ivar channel: the L{DtlsChannel}.
    @ivar associations: the associations mapped to this conversation.
    """

    def __init__(self, relay: DtlsRelay, address: tuple[str, int], connection: Any):
        self.relay = relay
        self.address = address
        self.peerHost = hostAddress(address[0])
        self.associations: set[Any] = set()
        self.channel = DtlsChannel(
            connection,
            self._send,
            relay.reactor,
            received=self._received,
            established=self._established,
            ended=self._ended,
            mtu=relay.mtu,
        )
        self._lastActivity = relay.reactor.seconds()
        self._timer = relay.reactor.callLater(
            relay.handshakeTimeout, self._handshakeTimedOut
        )

    def _send(self, datagram: bytes) -> None:
        transport = self.relay.transport
        if transport is None:
            return
        try:
            transport.write(datagram, self.address)
        except Exception as error:
            self.relay.drop(f"sending to {self.address[0]} failed: {error}")

    def datagramReceived(self, data: bytes) -> None:
        """A datagram from the client."""
        self._lastActivity = self.relay.reactor.seconds()
        self.channel.datagramReceived(data)

    def _established(self) -> None:
        self._cancelTimer()
        self._timer = self.relay.reactor.callLater(
            self.relay.idleTimeout, self._idleCheck
        )

    def _received(self, plaintext: bytes) -> None:
        relay = self.relay
        try:
            message = decodeUdpPacket(plaintext)
        except MalformedMessage as error:
            relay.drop(f"malformed message over DTLS from {self.peerHost}: {error}")
            return
        if not isinstance(message, UdpDatagram):
            relay.drop(f"{type(message).__name__} over DTLS from a client")
            return
        association = relay.associations.get(message.associationId)
        if association is None:
            relay.drop(f"DTLS datagram from {self.peerHost} for no association")
            return
        association.dtlsDatagram(message, self)

    def attach(self, association: Any) -> None:
        """C{association} is now mapped to this conversation."""
        self.associations.add(association)

    def detach(self, association: Any) -> None:
        """C{association} ended: without associations, the conversation ends."""
        self.associations.discard(association)
        if not self.associations:
            self.close()

    def write(self, data: bytes) -> bool:
        """Send C{data} as one record; C{False} when it cannot be sent."""
        return self.channel.write(data)

    def close(self) -> None:
        """End the conversation (close_notify) and forget it."""
        self._cancelTimer()
        self.channel.close()
        self.relay._forget(self)

    def _ended(self, reason: str) -> None:
        """The client closed the conversation, or it failed."""
        self._cancelTimer()
        self.relay._forget(self)
        associations, self.associations = self.associations, set()
        for association in associations:
            association.connection.finish(f"DTLS conversation ended: {reason}")

    def _handshakeTimedOut(self) -> None:
        self._timer = None
        if not self.channel.established:
            self.relay.drop(f"DTLS handshake from {self.peerHost} timed out")
            self.channel.close()
            self.relay._forget(self)

    def _idleCheck(self) -> None:
        self._timer = None
        reactor = self.relay.reactor
        idle = reactor.seconds() - self._lastActivity
        if idle >= self.relay.idleTimeout and not self.associations:
            self.close()
            return
        self._timer = reactor.callLater(
            max(self.relay.idleTimeout - idle, 1.0), self._idleCheck
        )

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


class DtlsRelay(DatagramProtocol):
    """
    The DTLS relay port's protocol: see the module docstring.  Set it as
    the factory's C{socks6Dtls}, so that the factory's SOCKS6 associations
    register with it.

    @ivar associations: the live SOCKS6 associations, by Association ID.
    @ivar conversations: the DTLS conversations, by client address.
    """

    noisy = False

    def __init__(
        self,
        reactor: Any,
        context: Any,
        idleTimeout: float = 120.0,
        handshakeTimeout: float = HANDSHAKE_TIMEOUT,
        maxConversations: int = MAX_CONVERSATIONS,
        maxPerHost: int = MAX_PER_HOST,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        """
        @param context: a pyOpenSSL DTLS server context no connection has
            used yet (L{DtlsSettings.context}); the relay sets its cookie
            callbacks.
        @param idleTimeout: seconds a conversation without an association
            may stay idle.
        """
        self.reactor = reactor
        self.context = context
        self.idleTimeout = idleTimeout
        self.handshakeTimeout = handshakeTimeout
        self.maxConversations = maxConversations
        self.maxPerHost = maxPerHost
        self.mtu = mtu
        self.associations: dict[int, Any] = {}
        self.conversations: dict[tuple[str, int], DtlsConversation] = {}
        self._perHost: dict[Any, int] = {}
        self._secret = os.urandom(32)
        self._drops = DropLog(reactor, None, "the SOCKS6 DTLS relay")
        context.set_cookie_generate_callback(self._cookie)
        context.set_cookie_verify_callback(self._verifyCookie)
        self._listener = self._newListener()

    # Associations

    def register(self, association: Any) -> None:
        """
        Let datagrams over DTLS reach C{association} (a new SOCKS6
        association; its ID is drawn again in the unlikely case it is
        taken).
        """
        import secrets

        while association.associationId in self.associations:
            association.associationId = secrets.randbits(64)
        self.associations[association.associationId] = association
        association.relay = self

    def unregister(self, association: Any) -> None:
        """C{association} ended: forget it, and tell its conversation."""
        if self.associations.get(association.associationId) is association:
            del self.associations[association.associationId]
        conversation = getattr(association, "conversation", None)
        if conversation is not None:
            conversation.detach(association)

    # Datagrams

    def drop(self, why: str) -> None:
        """Count a dropped datagram; log now and then."""
        self._drops(why)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            conversation = self.conversations.get(addr)
            if conversation is None:
                self._newPeer(data, addr)
            elif conversation.channel.established and _looksLikeClientHello(data):
                # A new handshake from the same address (the client lost
                # its state): RFC 6347 4.2.8, once the cookie returns.
                self._newPeer(data, addr, conversation)
            else:
                conversation.datagramReceived(data)
        except Exception:
            log.failure("handling a DTLS datagram failed")

    def _newPeer(
        self,
        data: bytes,
        addr: tuple[str, int],
        previous: DtlsConversation | None = None,
    ) -> None:
        """
        A datagram from an address without a conversation (or a new
        ClientHello where C{previous} is): the cookie exchange.
        """
        from OpenSSL import SSL

        if not _looksLikeClientHello(data):
            self.drop(f"not a DTLS ClientHello from {addr[0]}:{addr[1]}")
            return
        host = hostAddress(addr[0])
        if previous is None and (
            len(self.conversations) >= self.maxConversations
            or self._perHost.get(host, 0) >= self.maxPerHost
        ):
            self.drop(f"too many DTLS conversations (from {addr[0]})")
            return
        listener = self._listener
        # The cookie callbacks read the peer's address here.
        listener.set_app_data(addr)
        try:
            listener.bio_write(data)
            listener.DTLSv1_listen()
        except SSL.WantReadError:
            # No valid cookie: the HelloVerifyRequest goes back, no state.
            self._sendPending(listener, addr)
            return
        except SSL.Error as error:
            self._listener = self._newListener()
            self.drop(f"bad DTLS ClientHello from {addr[0]}: {error}")
            return
        # The cookie came back: the listener becomes the conversation.
        self._listener = self._newListener()
        if previous is not None:
            previous.channel.close()
            previous._ended("the client started a new DTLS handshake")
        conversation = DtlsConversation(self, addr, listener)
        self.conversations[addr] = conversation
        self._perHost[host] = self._perHost.get(host, 0) + 1
        # DTLSv1_listen consumed the ClientHello; the handshake needs it.
        conversation.datagramReceived(data)

    def _sendPending(self, connection: Any, addr: tuple[str, int]) -> None:
        from OpenSSL import SSL

        while True:
            try:
                datagram = connection.bio_read(65536)
            except SSL.WantReadError:
                return
            try:
                self.transport.write(datagram, addr)
            except Exception as error:
                self.drop(f"sending to {addr[0]} failed: {error}")
                return

    def _newListener(self) -> Any:
        from OpenSSL import SSL

        listener = SSL.Connection(self.context, None)
        listener.set_accept_state()
        listener.set_ciphertext_mtu(self.mtu)
        return listener

    def _forget(self, conversation: DtlsConversation) -> None:
        if self.conversations.get(conversation.address) is conversation:
            del self.conversations[conversation.address]
            host = conversation.peerHost
            left = self._perHost.get(host, 1) - 1
            if left > 0:
                self._perHost[host] = left
            else:
                self._perHost.pop(host, None)

    # Cookies

    def _cookieFor(self, addr: tuple[str, int], step: int) -> bytes:
        text = f"{step}|{addr[0]}|{addr[1]}".encode()
        return hmac.new(self._secret, text, hashlib.sha256).digest()[:16]

    def _cookie(self, connection: Any) -> bytes:
        addr = connection.get_app_data()
        if addr is None:
            raise ValueError("a cookie for a connection without a peer")
        return self._cookieFor(addr, int(self.reactor.seconds() // COOKIE_STEP))

    def _verifyCookie(self, connection: Any, cookie: bytes) -> bool:
        # Called by DTLSv1_listen, then again by the handshake that takes
        # over the ClientHello: the connection knows its peer both times.
        addr = connection.get_app_data()
        if addr is None:
            return False
        step = int(self.reactor.seconds() // COOKIE_STEP)
        return any(
            hmac.compare_digest(cookie, self._cookieFor(addr, s))
            for s in (step, step - 1)
        )

    # Lifetime

    def stopProtocol(self) -> None:
        """The port closed: end every conversation."""
        for conversation in list(self.conversations.values()):
            conversation.close()

    def listen(self, port: int = 0, interface: str = "") -> Any:
        """
        Listen with this relay on C{interface} and C{port} (reading
        datagrams whole, up to L{MAX_DATAGRAM} bytes).

        @return: the listening port.
        """
        return self.reactor.listenUDP(
            port, self, interface=interface, maxPacketSize=MAX_DATAGRAM
        )

    def service(self, settings: DtlsSettings) -> Any:
        """A service listening with this relay on C{settings}' port."""
        from twisted.application.internet import UDPServer

        return UDPServer(
            settings.port,
            self,
            interface=settings.interface,
            maxPacketSize=MAX_DATAGRAM,
        )
