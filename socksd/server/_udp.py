"""
What the UDP associations of SOCKS5 and SOCKS6 share: the sockets of one
association (L{AssociationSockets}: the one it listens on, and one of the
other address family, made when a datagram first needs it), and the
rate-limited log of dropped datagrams (L{DropLog}).

An association listens on one address (the interface the client came in
on, or the one it asked for), so its socket has that address's family.  A
destination of the other family (an IPv6 host for an association on
127.0.0.1, say) goes out of a second socket of that family, made on the
first such datagram and closed with the association; answers to it come
back through the association as any other.  The second socket is bound to
the other family's loopback address when the association's address is a
loopback one (so that a loopback association reaches no more than loopback
destinations), else to the other family's unspecified address (the system
picks the source address by its routes).  An IPv6 socket bound to an
IPv4-mapped address (a C{tcp6} listener reached over IPv4) writes to IPv4
destinations itself.  When the other family cannot be used here (no IPv6
on the host), the datagram is dropped, and that is logged like any other
drop.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any, Callable

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from socksd.address import hostAddress

__all__ = [
    "AssociationSockets",
    "DropLog",
    "LOG_INTERVAL",
    "MAX_DATAGRAM",
    "MAX_PENDING",
    "MAX_REMOTES",
]

log = Logger()

#: The most datagrams of one association waiting for a name resolution.
MAX_PENDING = 64
#: The most remote (address, port) pairs one association remembers as
#: allowed to answer; the least recently used is forgotten first.
MAX_REMOTES = 1024
#: Seconds between two log events about dropped datagrams, per association.
LOG_INTERVAL = 10.0
#: The largest datagram an association's sockets read whole (Twisted's
#: default, 8192, would cut longer ones short without a word).
MAX_DATAGRAM = 65535

_LOOPBACK = {4: "127.0.0.1", 6: "::1"}
_UNSPECIFIED = {4: "0.0.0.0", 6: "::"}


class DropLog:
    """
    Counts an association's dropped datagrams, and logs them at most once
    every L{LOG_INTERVAL} seconds, with the number dropped since the last
    event and the latest reason: a client (or anyone on the path) can make
    an association drop datagrams as fast as it sends them, and must not be
    able to flood the log.

    @ivar dropped: datagrams dropped since the association started.
    """

    __slots__ = ("reactor", "client", "subject", "dropped", "_unlogged", "_lastLog")

    def __init__(self, reactor: Any, client: Any, subject: str | None = None) -> None:
        """
        @param client: the client's address, for the log.
        @param subject: what drops them, for the log; by default "UDP
            association of" the client.
        """
        self.reactor = reactor
        self.client = client
        self.subject = subject or f"UDP association of {client}"
        self.dropped = 0
        self._unlogged = 0
        self._lastLog: float | None = None

    def __call__(self, why: str) -> None:
        """Count a dropped datagram; log now and then."""
        self.dropped += 1
        self._unlogged += 1
        now = self.reactor.seconds()
        if self._lastLog is None or now - self._lastLog >= LOG_INTERVAL:
            self._lastLog = now
            log.warn(
                "{subject}: dropped {count} datagram(s); latest: {why}",
                subject=self.subject,
                client=self.client,
                count=self._unlogged,
                why=why,
            )
            self._unlogged = 0


class _OtherFamily(DatagramProtocol):
    """The second socket's protocol: what it receives goes to the owner's."""

    noisy = False

    def __init__(self, deliver: Callable[[bytes, Any], None]) -> None:
        self.deliver = deliver

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.deliver(data, addr)


class AssociationSockets:
    """
    An association's sockets: see the module docstring.

    @ivar port: the socket the association listens on (its C{IListeningPort}),
        set by the command once it listens.
    @ivar other: the socket of the other family, once made.
    """

    __slots__ = ("reactor", "protocol", "port", "other", "_version", "_mapped", "_failed")

    def __init__(self, reactor: Any, protocol: Any) -> None:
        """
        @param protocol: the association: its C{datagramReceived(data,
            addr)} gets what the second socket receives too.
        """
        self.reactor = reactor
        self.protocol = protocol
        self.port: Any = None
        self.other: Any = None
        self._version: int | None = None
        self._mapped = False
        self._failed: str | None = None

    def _host(self) -> None:
        """Learn the family of the listening socket (once)."""
        text = getattr(self.port.getHost(), "host", "")
        address = hostAddress(text)
        self._version = address.version if address is not None else 4
        # An IPv6 socket on an IPv4-mapped address reaches IPv4 hosts.
        self._mapped = ":" in str(text) and self._version == 4

    def write(self, payload: bytes, address: IPv4Address | IPv6Address, port: int) -> None:
        """
        Send C{payload} to C{address}:C{port} from the socket of its family.

        @raise OSError: the system refused to send, or no socket of the
            address's family can be made here.
        @raise Exception: anything Twisted's C{write} raises (its
            C{InvalidAddressError}, say); the caller drops the datagram.
        """
        if self._version is None:
            self._host()
        if address.version == self._version:
            if self._mapped:
                self.port.write(payload, (f"::ffff:{address}", port))
            else:
                self.port.write(payload, (str(address), port))
            return
        other = self.other
        if other is None:
            other = self._otherSocket(address.version)
        other.write(payload, (str(address), port))

    def _otherSocket(self, version: int) -> Any:
        if self._failed is not None:
            raise OSError(self._failed)
        loopback = hostAddress(getattr(self.port.getHost(), "host", ""))
        table = _LOOPBACK if loopback is not None and loopback.is_loopback else _UNSPECIFIED
        interface = table[version]
        try:
            self.other = self.reactor.listenUDP(
                0,
                _OtherFamily(self.protocol.datagramReceived),
                interface=interface,
                maxPacketSize=MAX_DATAGRAM,
            )
        except Exception as error:
            self._failed = f"no IPv{version} socket on {interface}: {error}"
            raise OSError(self._failed) from None
        return self.other

    def stop(self) -> None:
        """Close both sockets."""
        port, self.port = self.port, None
        if port is not None:
            port.stopListening()
        other, self.other = self.other, None
        if other is not None:
            other.stopListening()
