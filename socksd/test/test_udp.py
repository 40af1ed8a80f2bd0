"""
UDP ASSOCIATE over loopback: the real reactor, a real UDP echo server on
127.0.0.1 (and ::1 where the host has it), socksd's real factory, a raw-byte
control connection and a raw UDP client.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from socksd.policy import Policy
from socksd.server import ServerConfig
from socksd.server.commands.udp import MAX_PENDING
from socksd.test.test_bind import WAIT, connectClient, startSocksd
from socksd.testing import FakeResolver


def _hasIPv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class Echo(DatagramProtocol):
    """A UDP echo server that records what it got."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.transport.write(data, addr)


class Receiver(DatagramProtocol):
    """A UDP client: tests read datagrams with L{next}."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self._waiting: Deferred[bytes] | None = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(data)
        else:
            self.queue.append(data)

    def next(self) -> Deferred[bytes]:
        """Fire with the next datagram."""
        if self.queue:
            d: Deferred[bytes] = Deferred()
            d.callback(self.queue.pop(0))
            return d
        self._waiting = Deferred()
        self._waiting.addTimeout(WAIT, reactor)
        return self._waiting


def listenUdp(testCase: TestCase, protocol: DatagramProtocol, host: str) -> int:
    """Listen with C{protocol} on a free UDP port of C{host}; return the port."""
    port = reactor.listenUDP(0, protocol, interface=host)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


def header(atyp: int, address: bytes, port: int, frag: int = 0) -> bytes:
    """An RFC 1928 UDP request header."""
    if atyp == 3:
        address = bytes([len(address)]) + address
    return bytes([0, 0, frag, atyp]) + address + port.to_bytes(2, "big")


def pause(seconds: float = 0.15) -> Deferred[None]:
    """Let datagrams in flight arrive."""
    return deferLater(reactor, seconds, lambda: None)


class UdpAssociateTests(TestCase):
    """UDP ASSOCIATE over real loopback sockets."""

    async def associate(
        self, socksPort: int, host: str = "127.0.0.1", request: bytes | None = None
    ) -> tuple[Any, tuple[str, int]]:
        """Open a control connection and an association; return both."""
        control = await connectClient(self, socksPort, host=host)
        if request is None:
            request = b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
        control.transport.write(b"\x05\x01\x00" + request)
        self.assertEqual(await control.readExactly(2), b"\x05\x00")
        head = await control.readExactly(4)
        self.assertEqual(head[:2], b"\x05\x00")
        if head[3] == 1:
            raw = await control.readExactly(6)
            address = socket.inet_ntop(socket.AF_INET, raw[:4])
        else:
            raw = await control.readExactly(18)
            address = socket.inet_ntop(socket.AF_INET6, raw[:16])
        return control, (address, int.from_bytes(raw[-2:], "big"))

    async def test_ipv4Echo(self) -> None:
        """
        The reply names a UDP port on the address the client came in on; a
        datagram with an IPv4 header reaches the echo server without the
        header, and the echo comes back with a header naming the echo server.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self)
        control, relay = await self.associate(socksPort)
        self.assertEqual(relay[0], "127.0.0.1")
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"hello", relay)
        self.assertEqual(await client.next(), head + b"hello")
        self.assertEqual(echo.received, [b"hello"])
        client.transport.write(head + b"x" * 1200, relay)
        self.assertEqual(await client.next(), head + b"x" * 1200)

    async def test_ipv6Echo(self) -> None:
        """
        Over ::1, the association's socket is on ::1 and IPv6 headers work.
        """
        if not _hasIPv6():
            raise SkipTest("this host has no IPv6 loopback (::1)")
        echo = Echo()
        echoPort = listenUdp(self, echo, "::1")
        factory, socksPort = await startSocksd(self, interface="::1")
        control, relay = await self.associate(socksPort, host="::1")
        self.assertEqual(relay[0], "::1")
        client = Receiver()
        listenUdp(self, client, "::1")
        head = header(4, socket.inet_pton(socket.AF_INET6, "::1"), echoPort)
        client.transport.write(head + b"six", relay)
        self.assertEqual(await client.next(), head + b"six")

    async def test_domainDestination(self) -> None:
        """
        A domain destination is resolved with the factory's resolver; the
        answer's header names the address it came from.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        resolver = FakeResolver({"echo.example": ["127.0.0.1"]})
        factory, socksPort = await startSocksd(self, resolver=resolver)
        control, relay = await self.associate(socksPort)
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        client.transport.write(header(3, b"echo.example", echoPort) + b"named", relay)
        self.assertEqual(
            await client.next(), header(1, b"\x7f\x00\x00\x01", echoPort) + b"named"
        )
        self.assertIn("echo.example", resolver.queries)

    async def test_intruderDropped(self) -> None:
        """
        Once the client's port is known, a datagram from another port is
        dropped: it reaches nobody and gets no answer.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self)
        control, relay = await self.associate(socksPort)
        client, intruder = Receiver(), Receiver()
        listenUdp(self, client, "127.0.0.1")
        listenUdp(self, intruder, "127.0.0.1")
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"mine", relay)
        await client.next()
        intruder.transport.write(head + b"theirs", relay)
        await pause()
        self.assertEqual(echo.received, [b"mine"])
        self.assertEqual(intruder.queue, [])

    async def test_requestedPortOnly(self) -> None:
        """
        When the request names a port, only datagrams from that port are
        relayed, even the first one.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self)
        client, other = Receiver(), Receiver()
        clientPort = listenUdp(self, client, "127.0.0.1")
        listenUdp(self, other, "127.0.0.1")
        request = b"\x05\x03\x00\x01\x7f\x00\x00\x01" + clientPort.to_bytes(2, "big")
        control, relay = await self.associate(socksPort, request=request)
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        other.transport.write(head + b"other", relay)
        await pause()
        client.transport.write(head + b"client", relay)
        self.assertEqual(await client.next(), head + b"client")
        self.assertEqual(echo.received, [b"client"])

    async def test_fragmentsDropped(self) -> None:
        """
        A datagram with FRAG other than 0 is dropped; the next whole one is
        relayed.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self)
        control, relay = await self.associate(socksPort)
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        client.transport.write(
            header(1, b"\x7f\x00\x00\x01", echoPort, frag=1) + b"frag", relay
        )
        await pause()
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"whole", relay)
        self.assertEqual(await client.next(), head + b"whole")
        self.assertEqual(echo.received, [b"whole"])

    async def test_controlClosingEnds(self) -> None:
        """
        When the control connection closes, the association's UDP socket is
        closed: its port is free again.
        """
        factory, socksPort = await startSocksd(self)
        control, relay = await self.associate(socksPort)
        control.transport.loseConnection()
        await control.closed
        await pause(0.05)
        port = reactor.listenUDP(relay[1], DatagramProtocol(), interface="127.0.0.1")
        await port.stopListening()

    async def test_idleTimeout(self) -> None:
        """
        An association idle for C{udpTimeout} seconds ends: the control
        connection is closed.
        """
        factory, socksPort = await startSocksd(
            self, config=ServerConfig(udpTimeout=0.2)
        )
        control, relay = await self.associate(socksPort)
        await control.closed

    async def test_policyPerDestination(self) -> None:
        """
        The policy decides on each datagram's destination: a refused one is
        dropped, an allowed one relayed.
        """
        echo, blocked = Echo(), Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        blockedPort = listenUdp(self, blocked, "127.0.0.1")
        policy = Policy.fromToml(
            f'[[destination]]\naction = "block"\nto = ["127.0.0.0/8"]\n'
            f"ports = [{blockedPort}]\n"
        )
        factory, socksPort = await startSocksd(self, policy=policy)
        control, relay = await self.associate(socksPort)
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        client.transport.write(
            header(1, b"\x7f\x00\x00\x01", blockedPort) + b"no", relay
        )
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"yes", relay)
        self.assertEqual(await client.next(), head + b"yes")
        await pause()
        self.assertEqual(blocked.received, [])

    async def test_pendingBounded(self) -> None:
        """
        At most C{MAX_PENDING} datagrams wait for a name; more are dropped.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        answers: list[Deferred[Any]] = []

        class SlowResolver(FakeResolver):
            def resolve(self, name: str) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                answers.append(d)
                return d

        factory, socksPort = await startSocksd(self, resolver=SlowResolver())
        control, relay = await self.associate(socksPort)
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        for index in range(MAX_PENDING + 10):
            client.transport.write(
                header(3, b"slow.example", echoPort) + str(index).encode(), relay
            )
        await pause(0.3)
        self.assertEqual(len(answers), 1)
        from ipaddress import IPv4Address

        answers[0].callback([IPv4Address("127.0.0.1")])
        await pause(0.3)
        self.assertEqual(
            sorted(echo.received), sorted(str(i).encode() for i in range(MAX_PENDING))
        )


class CrossFamilyTests(TestCase):
    """
    UDP ASSOCIATE between address families: a second socket of the other
    family per association; a datagram that cannot be sent is dropped and
    logged at most once per interval, never with a traceback.
    """

    def setUp(self) -> None:
        if not _hasIPv6():
            raise SkipTest("this host has no IPv6 loopback (::1)")

    associate = UdpAssociateTests.associate

    async def test_ipv4AssociationReachesIPv6(self) -> None:
        """
        An association on 127.0.0.1 sends to an IPv6 echo server on ::1
        (by address and by name) from a socket of its own on ::1, and the
        echoes come back to the IPv4 client with IPv6 headers.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "::1")
        resolver = FakeResolver({"six.example": ["::1"]})
        factory, socksPort = await startSocksd(self, resolver=resolver)
        control, relay = await self.associate(socksPort)
        self.assertEqual(relay[0], "127.0.0.1")
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        head = header(4, socket.inet_pton(socket.AF_INET6, "::1"), echoPort)
        client.transport.write(head + b"to six", relay)
        self.assertEqual(await client.next(), head + b"to six")
        client.transport.write(header(3, b"six.example", echoPort) + b"named", relay)
        self.assertEqual(await client.next(), head + b"named")
        self.assertEqual(echo.received, [b"to six", b"named"])
        association = control.transport  # the control connection stays up
        self.assertTrue(association.connected)

    async def test_ipv6AssociationReachesIPv4(self) -> None:
        """
        An association on ::1 reaches an IPv4 echo server on 127.0.0.1, and
        the echo comes back with an IPv4 header.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self, interface="::1")
        control, relay = await self.associate(socksPort, host="::1")
        self.assertEqual(relay[0], "::1")
        client = Receiver()
        listenUdp(self, client, "::1")
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"to four", relay)
        self.assertEqual(await client.next(), head + b"to four")
        self.assertEqual(echo.received, [b"to four"])

    async def test_secondSocketClosedWithTheAssociation(self) -> None:
        """
        The socket of the other family closes when the control connection
        does: its port is free again.
        """
        senders: list[Any] = []

        class Recording(Echo):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                senders.append(addr)
                super().datagramReceived(data, addr)

        echoPort = listenUdp(self, Recording(), "::1")
        factory, socksPort = await startSocksd(self)
        control, relay = await self.associate(socksPort)
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        head = header(4, socket.inet_pton(socket.AF_INET6, "::1"), echoPort)
        client.transport.write(head + b"x", relay)
        await client.next()
        self.assertEqual(senders[0][0], "::1")
        control.transport.loseConnection()
        await control.closed
        await pause(0.05)
        port = reactor.listenUDP(senders[0][1], DatagramProtocol(), interface="::1")
        await port.stopListening()

    async def test_unusableFamilyLoggedOnce(self) -> None:
        """
        When no socket of the other family can be made, each datagram to
        that family is dropped: 50 of them make one warning, and no
        traceback; the association keeps serving its own family.
        """
        from twisted.logger import globalLogPublisher

        from socksd.server import _udp

        self.patch(_udp, "_LOOPBACK", {4: "127.0.0.1", 6: "2001:db8::dead"})
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self)
        control, relay = await self.associate(socksPort)
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        six = header(4, socket.inet_pton(socket.AF_INET6, "::1"), 9)
        for _ in range(50):
            client.transport.write(six + b"lost", relay)
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"still", relay)
        self.assertEqual(await client.next(), head + b"still")
        drops = [e for e in events if "dropped" in e.get("log_format", "")]
        self.assertEqual(len(drops), 1, drops)
        self.assertIn("no IPv6 socket", drops[0]["why"])
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_mappedListener(self) -> None:
        """
        Through a C{tcp6} listener reached over IPv4 (its address is
        IPv4-mapped), the association's IPv6 socket answers the IPv4 client
        and reaches IPv4 destinations itself.
        """
        echo = Echo()
        echoPort = listenUdp(self, echo, "127.0.0.1")
        factory, socksPort = await startSocksd(self, interface="::ffff:127.0.0.1")
        control, relay = await self.associate(socksPort, host="127.0.0.1")
        # The reply names the socket's address as the listener has it.
        self.assertEqual(relay[0], "::ffff:127.0.0.1")
        client = Receiver()
        listenUdp(self, client, "127.0.0.1")
        head = header(1, b"\x7f\x00\x00\x01", echoPort)
        client.transport.write(head + b"mapped", ("127.0.0.1", relay[1]))
        self.assertEqual(await client.next(), head + b"mapped")
