"""
SOCKS6 BIND and UDP ASSOCIATE honour the wanted bind address and port
(L{socksd.server.commands.bind.wantedAddress}): the proxy's own addresses
only, the policy deciding on them as a wanted bind address; and SOCKS6 UDP
between address families.  Over real sockets on loopback, with the requests
written by the wire codec.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from socksd.address import Destination
from socksd.interfaces import ConnectContext
from socksd.policy import Policy
from socksd.server import ServerConfig, SocksServerFactory
from socksd.server.commands.bind import isLocalAddress, listenRefusal
from socksd.test.test_dispatch import Harness
from socksd.test.test_server_socks6 import replies
from socksd.testing import FakeResolver
from socksd.wire.socks6 import (
    Command,
    PortParityOption,
    Request,
    SessionIdOption,
    SessionRequestOption,
    StackLeg,
    UdpAssociationConfirmation,
    UdpAssociationInit,
    UdpDatagram,
    buildMessage,
    readAuthenticationReply,
    readOperationReply,
    readUdpMessage,
)

WAIT = 10.0
REMOTE = StackLeg.PROXY_REMOTE
ANY4 = Destination(IPv4Address(0), 0)


def hasIPv6() -> bool:
    """Whether this host has an IPv6 loopback."""
    return isLocalAddress(IPv6Address("::1"))


def freePort(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A TCP and UDP port of C{host} that was free a moment ago."""
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            number = probe.getsockname()[1]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, number))
            except OSError:
                continue
        return number


class Raw(Protocol):
    """A SOCKS6 client in raw bytes: what the proxy sends, as it comes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiting: list[tuple[Any, Deferred[Any]]] = []
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def _check(self) -> None:
        for entry in list(self.waiting):
            read, deferred = entry
            before = bytes(self.buffer)
            result = read(self.buffer)
            if result is None:
                self.buffer[:] = before
                continue
            self.waiting.remove(entry)
            deferred.callback(result)

    def read(self, reader: Any) -> Deferred[Any]:
        """Fire with the next message C{reader} takes off the buffer."""
        deferred: Deferred[Any] = Deferred()
        self.waiting.append((reader, deferred))
        self._check()
        return deferred.addTimeout(WAIT, reactor)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


class Echo(DatagramProtocol):
    """A UDP echo server."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))
        self.transport.write(data, addr)


class WantedTestsMixin:
    """A socksd on 127.0.0.1, and raw SOCKS6 clients."""

    addCleanup: Any

    async def startSocksd(self, policy: Any = None, **config: Any) -> int:
        config.setdefault("splice", False)
        config.setdefault("bindTimeout", WAIT)
        self.factory = SocksServerFactory(
            reactor,
            resolver=FakeResolver({"echo.example": ["127.0.0.1"]}),
            policy=policy,
            config=ServerConfig(**config),
        )
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            self.factory
        )
        self.addCleanup(port.stopListening)
        self.socksPort = port.getHost().port
        return self.socksPort

    async def request(self, command: int, wanted: Destination, *options: Any) -> Any:
        """
        Send a SOCKS6 request; return the client and the first Operation
        Reply.
        """
        raw = Raw()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", self.socksPort).connect(
            Factory.forProtocol(lambda: raw)
        )

        async def close() -> None:
            if raw.transport.connected:
                raw.transport.abortConnection()
            await raw.closed

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        raw.transport.write(buildMessage(Request(command, wanted, tuple(options))))
        self.authReply = await raw.read(readAuthenticationReply)
        reply = await raw.read(readOperationReply)
        return raw, reply

    def listenUdp(self, protocol: DatagramProtocol, host: str) -> int:
        port = reactor.listenUDP(0, protocol, interface=host, maxPacketSize=65535)
        self.addCleanup(port.stopListening)
        return port.getHost().port


class BindWantedTests(WantedTestsMixin, TestCase):
    """
    SOCKS6 BIND listens where the client wants, on the proxy's own
    addresses.
    """

    async def test_wantedPort(self) -> None:
        """
        BIND for 127.0.0.1 and a free port listens there: the first reply
        names it, a peer that connects to it gets the second reply and the
        relay.
        """
        await self.startSocksd()
        wanted = freePort()
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address("127.0.0.1"), wanted)
        )
        self.assertEqual(first.code, 0)
        self.assertEqual(first.bind, Destination(IPv4Address("127.0.0.1"), wanted))
        peer = Raw()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", wanted).connect(
            Factory.forProtocol(lambda: peer)
        )
        self.addCleanup(peer.transport.loseConnection)
        second = await raw.read(readOperationReply)
        self.assertEqual(second.code, 0)
        self.assertEqual(second.bind.port, peer.transport.getHost().port)
        peer.transport.write(b"from the peer")
        got = await raw.read(
            lambda buffer: bytes(buffer) if len(buffer) >= 13 else None
        )
        self.assertEqual(got, b"from the peer")

    async def test_anyAddressWantedPort(self) -> None:
        """
        The unspecified address with a port: the usual address (the
        interface the client came in on), that port.
        """
        await self.startSocksd()
        wanted = freePort()
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address(0), wanted)
        )
        self.assertEqual(first.bind, Destination(IPv4Address("127.0.0.1"), wanted))

    async def test_otherLoopbackFamily(self) -> None:
        """
        A client on loopback may want the other family's loopback: BIND for
        [::1] from 127.0.0.1 listens on ::1.
        """
        if not hasIPv6():
            raise SkipTest("this host has no IPv6 loopback (::1)")
        await self.startSocksd()
        raw, first = await self.request(Command.BIND, Destination(IPv6Address("::1"), 0))
        self.assertEqual(first.code, 0)
        self.assertEqual(first.bind.host, IPv6Address("::1"))
        self.assertNotEqual(first.bind.port, 0)

    async def test_notOwnAddress(self) -> None:
        """
        An address that is not the proxy's is refused with 02 (not
        allowed), before anything listens.
        """
        await self.startSocksd()
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address("192.0.2.1"), 0)
        )
        self.assertEqual(first.code, 0x02)
        await raw.closed

    async def test_name(self) -> None:
        """
        A name as the wanted bind address gets 08 (address type not
        supported).
        """
        await self.startSocksd()
        raw, first = await self.request(Command.BIND, Destination("localhost", 0))
        self.assertEqual(first.code, 0x08)

    async def test_portInUse(self) -> None:
        """
        A port that something else listens on gets 01 (general failure).
        """
        await self.startSocksd()
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address("127.0.0.1"), taken.getsockname()[1])
        )
        self.assertEqual(first.code, 0x01)

    async def test_pinnedBindAddress(self) -> None:
        """
        With C{bindAddress} (C{--bind-address}), BIND listens there only:
        another address of the proxy is refused (02); that one is fine.
        """
        await self.startSocksd(bindAddress="127.0.0.1")
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address("127.0.0.2"), 0)
        )
        self.assertEqual(first.code, 0x02)
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address("127.0.0.1"), 0)
        )
        self.assertEqual(first.code, 0)

    async def test_policyDecidesOnWantedAddress(self) -> None:
        """
        The policy decides on the address and port BIND will use: a rule
        refusing BIND on a port refuses it (02), other ports pass; with
        C{deny-private-destinations}, the proxy's own loopback address is
        still a fine bind address (only remote hosts are refused).
        """
        blocked = freePort()
        policy = Policy.fromToml(
            'deny-private-destinations = true\n'
            '[[destination]]\naction = "block"\ncommands = ["bind"]\n'
            f'to = ["127.0.0.0/8"]\nports = [{blocked}]\nname = "no-port"\n'
        )
        await self.startSocksd(policy=policy)
        raw, first = await self.request(
            Command.BIND, Destination(IPv4Address(0), blocked)
        )
        self.assertEqual(first.code, 0x02)
        raw, first = await self.request(Command.BIND, ANY4)
        self.assertEqual(first.code, 0)

    async def test_backlogOnWantedPort(self) -> None:
        """
        A listening BIND (a session, a backlog) listens on the wanted port.
        """
        from socksd.wire.socks6 import ListenBacklogOption

        await self.startSocksd()
        wanted = freePort()
        raw, first = await self.request(
            Command.BIND,
            Destination(IPv4Address("127.0.0.1"), wanted),
            SessionRequestOption(),
            ListenBacklogOption(REMOTE, 2),
        )
        self.assertEqual((first.code, first.bind.port), (0, wanted))
        sessionId = next(
            o.sessionId for o in self.authReply.options if isinstance(o, SessionIdOption)
        )
        from socksd.server.socks6.sessions import sessionTableFor

        self.addCleanup(sessionTableFor(self.factory).close, sessionId)


class WantedAddressRulesTests(SynchronousTestCase):
    """
    The checks of a wanted bind address that loopback tests cannot reach.
    """

    def test_loopbackForRemoteClient(self) -> None:
        """
        A client that is not on loopback may not have the proxy listen on
        its loopback address (02): it could pose as a local service there.
        """
        harness = Harness(self)
        for command in (Command.BIND, Command.UDP_ASSOCIATE):
            protocol, transport = harness.connect()
            harness.send(
                protocol,
                buildMessage(
                    Request(command, Destination(IPv4Address("127.0.0.1"), 0), ())
                ),
            )
            auth, [reply] = replies(transport.value())
            self.assertEqual(reply.code, 0x02)
            self.assertTrue(transport.disconnecting)

    def test_multicast(self) -> None:
        """
        A multicast address is no bind address (02).
        """
        harness = Harness(self)
        protocol, transport = harness.connect()
        harness.send(
            protocol,
            buildMessage(
                Request(
                    Command.UDP_ASSOCIATE, Destination(IPv4Address("239.1.2.3"), 0), ()
                )
            ),
        )
        auth, [reply] = replies(transport.value())
        self.assertEqual(reply.code, 0x02)

    def test_listenRefusal(self) -> None:
        """
        Listening errors become the reply's failure: an address that is not
        ours or a privileged port is "not allowed", a port in use a general
        failure, anything else itself.
        """
        import errno

        from socksd.errors import GeneralFailure, NotAllowed
        from twisted.internet.error import CannotListenError

        def failed(code: int) -> BaseException:
            return CannotListenError("127.0.0.1", 80, OSError(code, "x"))

        self.assertIsInstance(listenRefusal(failed(errno.EADDRNOTAVAIL), "h", 1), NotAllowed)
        self.assertIsInstance(listenRefusal(failed(errno.EACCES), "h", 80), NotAllowed)
        self.assertIsInstance(
            listenRefusal(failed(errno.EADDRINUSE), "h", 1), GeneralFailure
        )
        other = failed(errno.EINVAL)
        self.assertIs(listenRefusal(other, "h", 1), other)

    def test_bindRequestSkipsAddressRefusals(self) -> None:
        """
        A policy refuses the proxy's own and private addresses as
        destinations, not as wanted bind addresses (C{bindRequest}); its
        rules still apply to both.
        """
        policy = Policy.fromToml(
            'deny-private-destinations = true\n'
            '[[destination]]\naction = "block"\nports = [7]\n'
        )
        policy.ownAddresses = frozenset([IPv4Address("127.0.0.1")])
        context = ConnectContext(None, 6, 2)
        own = Destination(IPv4Address("127.0.0.1"), 0)
        self.assertFalse(policy.decide(context, own).allowed)
        bindContext = context._replace(bindRequest=True)
        self.assertTrue(policy.decide(bindContext, own).allowed)
        self.assertFalse(
            policy.decide(bindContext, Destination(IPv4Address("127.0.0.1"), 7)).allowed
        )


class UdpWantedTests(WantedTestsMixin, TestCase):
    """
    SOCKS6 UDP ASSOCIATE on the wanted address and port, and between
    address families.
    """

    async def associate(self, wanted: Destination, *options: Any) -> Any:
        """An association; return the client, the reply and the ID."""
        raw, reply = await self.request(Command.UDP_ASSOCIATE, wanted, *options)
        if reply.code != 0:
            return raw, reply, None
        init = await raw.read(readUdpMessage)
        self.assertIsInstance(init, UdpAssociationInit)
        return raw, reply, init.associationId

    async def test_wantedPortOverUdp(self) -> None:
        """
        UDP ASSOCIATE for 127.0.0.1 and a free port: the association's
        socket is there, and a datagram sent to it reaches the echo server
        and comes back.
        """
        echo = Echo()
        echoPort = self.listenUdp(echo, "127.0.0.1")
        await self.startSocksd()
        wanted = freePort()
        raw, reply, associationId = await self.associate(
            Destination(IPv4Address("127.0.0.1"), wanted)
        )
        self.assertEqual(reply.bind, Destination(IPv4Address("127.0.0.1"), wanted))
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        remote = Destination(IPv4Address("127.0.0.1"), echoPort)
        client.sendto(
            buildMessage(UdpDatagram(associationId, remote, b"ping")),
            ("127.0.0.1", wanted),
        )
        self.assertEqual(
            await raw.read(readUdpMessage), UdpAssociationConfirmation(associationId)
        )
        for _ in range(500):
            try:
                data = client.recv(2048)
                break
            except BlockingIOError:
                await deferLater(reactor, 0.01)
        self.assertEqual(
            data, buildMessage(UdpDatagram(associationId, remote, b"ping"))
        )

    async def test_notOwnAddress(self) -> None:
        """
        An address that is not the proxy's is refused with 02.
        """
        await self.startSocksd()
        raw, reply, _ = await self.associate(Destination(IPv4Address("192.0.2.1"), 0))
        self.assertEqual(reply.code, 0x02)

    async def test_policyRefusesWantedPort(self) -> None:
        """
        A rule refusing UDP on a port refuses an association that wants it;
        with C{deny-private-destinations} an association on loopback is
        allowed, while its datagrams to private destinations are dropped.
        """
        blocked = freePort()
        echo = Echo()
        echoPort = self.listenUdp(echo, "127.0.0.1")
        policy = Policy.fromToml(
            'deny-private-destinations = true\n'
            '[[destination]]\naction = "block"\ncommands = ["udp"]\n'
            f'ports = [{blocked}]\n'
        )
        await self.startSocksd(policy=policy)
        raw, reply, _ = await self.associate(Destination(IPv4Address(0), blocked))
        self.assertEqual(reply.code, 0x02)
        raw, reply, associationId = await self.associate(ANY4)
        self.assertEqual(reply.code, 0)
        raw.transport.write(
            buildMessage(
                UdpDatagram(
                    associationId,
                    Destination(IPv4Address("127.0.0.1"), echoPort),
                    b"private",
                )
            )
        )
        self.assertEqual(
            await raw.read(readUdpMessage), UdpAssociationConfirmation(associationId)
        )
        await deferLater(reactor, 0.2)
        self.assertEqual(echo.received, [])

    async def test_ipv6AssociationReachesIPv4(self) -> None:
        """
        An association on [::1] (wanted by a client on 127.0.0.1) relays
        datagrams over TCP to an IPv4 echo server, from a socket of the
        other family, and the echo comes back.
        """
        if not hasIPv6():
            raise SkipTest("this host has no IPv6 loopback (::1)")
        echo = Echo()
        echoPort = self.listenUdp(echo, "127.0.0.1")
        await self.startSocksd()
        raw, reply, associationId = await self.associate(
            Destination(IPv6Address("::1"), 0)
        )
        self.assertEqual(reply.bind.host, IPv6Address("::1"))
        remote = Destination(IPv4Address("127.0.0.1"), echoPort)
        raw.transport.write(buildMessage(UdpDatagram(associationId, remote, b"four")))
        self.assertEqual(
            await raw.read(readUdpMessage), UdpAssociationConfirmation(associationId)
        )
        self.assertEqual(
            await raw.read(readUdpMessage), UdpDatagram(associationId, remote, b"four")
        )

    async def test_ipv4AssociationReachesIPv6(self) -> None:
        """
        An association on 127.0.0.1 relays to an IPv6 echo server on ::1,
        by address and by name.
        """
        if not hasIPv6():
            raise SkipTest("this host has no IPv6 loopback (::1)")
        echo = Echo()
        echoPort = self.listenUdp(echo, "::1")
        await self.startSocksd()
        self.factory.resolver = FakeResolver({"six.example": ["::1"]})
        raw, reply, associationId = await self.associate(ANY4)
        remote = Destination(IPv6Address("::1"), echoPort)
        raw.transport.write(buildMessage(UdpDatagram(associationId, remote, b"six")))
        self.assertEqual(
            await raw.read(readUdpMessage), UdpAssociationConfirmation(associationId)
        )
        self.assertEqual(
            await raw.read(readUdpMessage), UdpDatagram(associationId, remote, b"six")
        )
        raw.transport.write(
            buildMessage(
                UdpDatagram(associationId, Destination("six.example", echoPort), b"n")
            )
        )
        self.assertEqual(
            await raw.read(readUdpMessage), UdpDatagram(associationId, remote, b"n")
        )

    async def test_reservedPortClaimed(self) -> None:
        """
        Port Parity with "reserve" holds the counterpart port; a UDP
        ASSOCIATE of the same client that wants that port gets it (the
        reservation's socket), and its datagrams flow.
        """
        echo = Echo()
        echoPort = self.listenUdp(echo, "127.0.0.1")
        await self.startSocksd()
        raw, reply, _ = await self.associate(ANY4, PortParityOption(REMOTE, 1, 1))
        self.assertEqual(reply.options, (PortParityOption(REMOTE, 1, 1),))
        counterpart = reply.bind.port + 1
        claimer, claimed, associationId = await self.associate(
            Destination(IPv4Address("127.0.0.1"), counterpart)
        )
        self.assertEqual((claimed.code, claimed.bind.port), (0, counterpart))
        remote = Destination(IPv4Address("127.0.0.1"), echoPort)
        claimer.transport.write(
            buildMessage(UdpDatagram(associationId, remote, b"claimed"))
        )
        await claimer.read(readUdpMessage)
        self.assertEqual(
            await claimer.read(readUdpMessage),
            UdpDatagram(associationId, remote, b"claimed"),
        )
        # The first association ending does not take the port back.
        raw.transport.loseConnection()
        await raw.closed
        claimer.transport.write(buildMessage(UdpDatagram(associationId, remote, b"2")))
        self.assertEqual(
            await claimer.read(readUdpMessage), UdpDatagram(associationId, remote, b"2")
        )

    async def test_reservedInSession(self) -> None:
        """
        A port reserved inside a session can be claimed only from that
        session: outside it the request is refused (02), inside it is
        served.
        """
        await self.startSocksd()
        raw, reply, _ = await self.associate(
            ANY4, SessionRequestOption(), PortParityOption(REMOTE, 2, 1)
        )
        sessionId = next(
            o.sessionId for o in self.authReply.options if isinstance(o, SessionIdOption)
        )
        from socksd.server.socks6.sessions import sessionTableFor

        self.addCleanup(sessionTableFor(self.factory).close, sessionId)
        counterpart = reply.bind.port - 1
        wanted = Destination(IPv4Address("127.0.0.1"), counterpart)
        outsider, refused, _ = await self.associate(wanted)
        self.assertEqual(refused.code, 0x02)
        member, served, _ = await self.associate(wanted, SessionIdOption(sessionId))
        self.assertEqual((served.code, served.bind.port), (0, counterpart))

    async def test_tosAndTtlNotEchoed(self) -> None:
        """
        IP TOS and TTL, which UDP ASSOCIATE does not set on its traffic,
        are not echoed: their layout cannot say "not available", so their
        absence says it.
        """
        from socksd.wire.socks6 import IpTosOption, TtlOption, UdpErrorOption
        from socksd.wire.socks6 import Availability

        await self.startSocksd()
        raw, reply, _ = await self.associate(
            ANY4,
            IpTosOption(REMOTE, 0x10),
            TtlOption(REMOTE, 9),
            UdpErrorOption(REMOTE, Availability.UNAVAILABLE),
        )
        self.assertEqual(reply.code, 0)
        self.assertEqual(
            [type(option).__name__ for option in reply.options], ["UdpErrorOption"]
        )
