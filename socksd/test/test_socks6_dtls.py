"""
SOCKS6 UDP over DTLS: the relay port (L{socksd.server.socks6.dtls}), the
DTLS channel both ends share (L{socksd.dtls}), the client's use of it
(L{socksd.client.socks6.Socks6Dtls}) and C{--socks6-dtls-listen}.  Over
real sockets on 127.0.0.1, with a certificate made for the test;
OpenSSL's own DTLS client is in L{socksd.test.interop.test_dtls}.
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socksd.address import Destination
from socksd.dtls import MAX_PLAINTEXT, DtlsChannel, dtlsMissing, splitRecords
from socksd.test._vectors import h
from socksd.test.test_socks6_wanted import ANY4, Echo, Raw, WantedTestsMixin
from socksd.wire.socks6 import (
    Command,
    UdpAssociationConfirmation,
    UdpAssociationInit,
    UdpDatagram,
    buildMessage,
    decodeUdpPacket,
    readUdpMessage,
)

NO_DTLS = dtlsMissing()
WAIT = 10.0


def vector(name: str) -> bytes:
    """The bytes of a shared SOCKS6 vector (socks6-vectors.json)."""
    import json

    path = Path(__file__).parent / "socks6-vectors.json"
    for entry in json.loads(path.read_text())["vectors"]:
        if entry["id"] == name:
            return bytes.fromhex(entry["hex"])
    raise KeyError(name)


def retarget(message: bytes, associationId: int, port: int | None = None) -> bytes:
    """
    A vector's UDP message with the live Association ID and, for an IPv4
    datagram, 127.0.0.1:C{port} as its address; everything else (Message
    Length, payload, trailing bytes) as the vector has it.
    """
    data = bytearray(message)
    data[4:12] = associationId.to_bytes(8, "big")
    if port is not None:
        assert data[12] == 1
        data[14:16] = port.to_bytes(2, "big")
        data[16:20] = bytes([127, 0, 0, 1])
    return bytes(data)


def writeCertificate(testCase: TestCase) -> tuple[bytes, str, str]:
    """A certificate for 127.0.0.1 and its key in files: (PEM, key, cert)."""
    from socksd.test.test_client import makeCertificate

    certificate, key = makeCertificate(ipAddresses=("127.0.0.1",))
    directory = Path(testCase.mktemp()).resolve()
    directory.mkdir()
    (directory / "key.pem").write_bytes(key)
    (directory / "cert.pem").write_bytes(certificate)
    return certificate, str(directory / "key.pem"), str(directory / "cert.pem")


class DtlsPeer(DatagramProtocol):
    """
    A DTLS client towards the relay port, in raw SOCKS6 messages: what it
    receives are the plaintexts of the relay's records.
    """

    noisy = False

    def __init__(self, context: Any) -> None:
        self.context = context
        self.received: list[bytes] = []
        self.established: Deferred[None] = Deferred()
        self.ended: Deferred[str] = Deferred()
        self._waiting: Deferred[bytes] | None = None

    def start(self) -> None:
        from OpenSSL import SSL

        connection = SSL.Connection(self.context, None)
        connection.set_connect_state()
        self.channel = DtlsChannel(
            connection,
            self.transport.write,
            reactor,
            received=self._received,
            established=lambda: self.established.callback(None),
            ended=self.ended.callback,
        )
        self.channel.start()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.channel.datagramReceived(data)

    def _received(self, plaintext: bytes) -> None:
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(plaintext)
        else:
            self.received.append(plaintext)

    def next(self) -> Deferred[bytes]:
        """Fire with the next plaintext from the relay."""
        if self.received:
            d: Deferred[bytes] = Deferred()
            d.callback(self.received.pop(0))
            return d
        self._waiting = Deferred()
        return self._waiting.addTimeout(WAIT, reactor)


class SplitRecordsTests(SynchronousTestCase):
    """
    L{splitRecords} packs DTLS records into datagrams of at most the MTU.
    """

    @staticmethod
    def record(length: int, kind: int = 22) -> bytes:
        return bytes([kind, 0xFE, 0xFD]) + bytes(8) + length.to_bytes(2, "big") + (
            b"r" * length
        )

    def test_packed(self) -> None:
        """
        Records go together while they fit; the next starts a datagram.
        """
        one, two, three = self.record(100), self.record(200), self.record(900)
        self.assertEqual(
            splitRecords(one + two + three, 400), [one + two, three]
        )
        self.assertEqual(splitRecords(one + two + three, 1300), [one + two + three])

    def test_largeRecordAlone(self) -> None:
        """
        A record larger than the MTU goes alone, whole.
        """
        big, small = self.record(2000, 23), self.record(10)
        self.assertEqual(splitRecords(small + big + small, 1200), [small, big, small])

    def test_unparsable(self) -> None:
        """
        Bytes that are not a record go out as they are.
        """
        self.assertEqual(splitRecords(b"abc", 1200), [b"abc"])
        self.assertEqual(splitRecords(b"", 1200), [])
        truncated = self.record(50)[:30]
        self.assertEqual(splitRecords(truncated, 1200), [truncated])


class DescriptionTests(SynchronousTestCase):
    """
    C{dtls:PORT:interface=ADDR:privateKey=KEY.pem:certKey=CERT.pem}, and
    C{--socks6-dtls-listen}.
    """

    if NO_DTLS:
        skip = NO_DTLS

    def setUp(self) -> None:
        from socksd.test.test_client import makeCertificate

        certificate, key = makeCertificate(ipAddresses=("127.0.0.1",))
        directory = Path(self.mktemp())
        directory.mkdir()
        self.key = directory / "key.pem"
        self.cert = directory / "cert.pem"
        self.key.write_bytes(key)
        self.cert.write_bytes(certificate)

    def test_parse(self) -> None:
        """
        The port, the interface (escaped as Twisted's strings escape it) and
        the files, with the keywords of C{ssl:}.
        """
        from socksd.server.socks6.dtls import DtlsSettings, parseDtlsDescription

        self.assertEqual(
            parseDtlsDescription(
                f"dtls:4433:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"
            ),
            DtlsSettings(4433, "127.0.0.1", str(self.key), str(self.cert)),
        )
        self.assertEqual(
            parseDtlsDescription(
                f"dtls:0:interface=\\:\\:1:privateKey={self.key}:certKey={self.cert}"
            ).interface,
            "::1",
        )

    def test_badDescriptions(self) -> None:
        """
        Each mistake is a C{ValueError} that says what is wrong.
        """
        from socksd.server.socks6.dtls import parseDtlsDescription

        key, cert = self.key, self.cert
        for description, words in (
            (f"udp:4433:privateKey={key}", "not a dtls:"),
            (f"dtls:port:privateKey={key}:certKey={cert}", "not a port"),
            (f"dtls:70000:privateKey={key}:certKey={cert}", "not a port"),
            (f"dtls:1:privateKey={key}:certKey={cert}:sslmethod=x", "unknown keyword"),
            ("dtls:1:interface=127.0.0.1", "privateKey=KEY.pem is required"),
            (f"dtls:1:interface=nowhere:privateKey={key}:certKey={cert}", "not an IP"),
            ("dtls:1:privateKey=/no/such/key.pem", "cannot read /no/such/key.pem"),
            (f"dtls:1:privateKey={cert}:certKey={cert}", "do not load"),
        ):
            with self.assertRaises(ValueError) as caught:
                parseDtlsDescription(description)
            self.assertIn(words, str(caught.exception), description)

    def test_option(self) -> None:
        """
        C{--socks6-dtls-listen} is parsed at start; a bad description, one
        without SOCKS6 served, or one with C{--workers} is a one-line usage
        error; makeService gives the factory its relay and listens.
        """
        from socksd import tap

        description = f"dtls:0:interface=127.0.0.1:privateKey={self.key}:certKey={self.cert}"
        options = tap.Options()
        options.parseOptions(["--socks6-dtls-listen", description])
        self.assertEqual(options["socks6Dtls"].interface, "127.0.0.1")
        top = tap.makeService(options)
        services = list(top)
        factory = services[0].factory
        self.assertIsNotNone(factory.socks6Dtls)
        udp = [s for s in services if type(s).__name__ == "UDPServer"]
        self.assertEqual(len(udp), 1)
        self.assertEqual(udp[0].args[1], factory.socks6Dtls)
        for argv in (
            ["--socks6-dtls-listen", "dtls:0:privateKey=/no/such.pem"],
            ["--socks6-dtls-listen", description, "--protocols", "socks5"],
            ["--socks6-dtls-listen", description, "--workers", "2"],
        ):
            with self.assertRaises(usage.UsageError) as caught:
                tap.Options().parseOptions(argv)
            self.assertNotIn("\n", str(caught.exception))

    def test_withoutPyOpenSSL(self) -> None:
        """
        Where pyOpenSSL is missing (PyPy without the tls extra), the option
        is a usage error that names C{socksd[tls]}, and the client's
        L{Socks6Dtls} says the same.
        """
        from socksd import tap
        from socksd.client.socks6 import Socks6Dtls

        # The import system reads this very dict: an entry of None makes
        # "import OpenSSL" fail, as where it is not installed.
        saved = sys.modules.get("OpenSSL")
        sys.modules["OpenSSL"] = None  # type: ignore[assignment]
        self.addCleanup(sys.modules.__setitem__, "OpenSSL", saved)
        with self.assertRaises(usage.UsageError) as caught:
            tap.Options().parseOptions(
                ["--socks6-dtls-listen", f"dtls:0:privateKey={self.key}"]
            )
        self.assertIn("socksd[tls]", str(caught.exception))
        with self.assertRaises(RuntimeError) as raised:
            Socks6Dtls(reactor, "127.0.0.1", 4433)
        self.assertIn("socksd[tls]", str(raised.exception))


class DtlsRelayTests(WantedTestsMixin, TestCase):
    """
    The relay port with a real socksd, real UDP echo servers and DTLS
    clients: socksd's own (L{socks6UdpAssociate} with L{Socks6Dtls}) and a
    raw one (L{DtlsPeer}).
    """

    if NO_DTLS:
        skip = NO_DTLS

    async def startRelay(self, **relayArgs: Any) -> None:
        """socksd on 127.0.0.1, with a DTLS relay port."""
        from socksd.server.socks6.dtls import DtlsRelay, parseDtlsDescription

        self.certificate, key, cert = writeCertificate(self)
        settings = parseDtlsDescription(
            f"dtls:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        await self.startSocksd()
        self.relay = DtlsRelay(reactor, settings.context(), **relayArgs)
        self.factory.socks6Dtls = self.relay
        port = self.relay.listen(0, "127.0.0.1")
        self.addCleanup(port.stopListening)
        self.dtlsPort = port.getHost().port
        self.echo = Echo()
        self.echoPort = self.listenUdp(self.echo, "127.0.0.1")

    async def peer(self, interface: str = "127.0.0.1", number: int = 0) -> DtlsPeer:
        """A raw DTLS client that completed its handshake with the relay."""
        from socksd.dtls import clientContext

        peer = DtlsPeer(clientContext(self.certificate))
        port = reactor.listenUDP(number, peer, interface=interface, maxPacketSize=65535)
        peer.port = port
        self.addCleanup(port.stopListening)
        port.connect("127.0.0.1", self.dtlsPort)
        peer.start()
        await peer.established.addTimeout(WAIT, reactor)
        self.addCleanup(peer.channel.close)
        return peer

    async def association(self) -> tuple[Raw, int]:
        """A UDP association over TCP: the client and the ID."""
        raw, reply = await self.request(Command.UDP_ASSOCIATE, ANY4)
        self.assertEqual(reply.code, 0)
        init = await raw.read(readUdpMessage)
        self.assertIsInstance(init, UdpAssociationInit)
        return raw, init.associationId

    async def test_socksdClient(self) -> None:
        """
        socksd's client associates over TCP, then sends its datagrams over
        DTLS: the proxy confirms the DTLS conversation, relays datagrams
        by address and by name, and the answers come back over DTLS; the
        log counts the bytes; closing the association ends the DTLS
        conversation.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint

        from socksd.client.socks6 import Socks6Dtls, socks6UdpAssociate

        await self.startRelay()

        class Receiver:
            def __init__(self) -> None:
                self.datagrams: list[tuple[bytes, Destination]] = []
                self.lost: Deferred[Any] = Deferred()

            def datagramReceived(self, payload: bytes, source: Destination) -> None:
                self.datagrams.append((payload, source))

            def associationLost(self, reason: Any) -> None:
                self.lost.callback(reason.type)

        receiver = Receiver()
        association = await socks6UdpAssociate(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.socksPort),
            receiver,
            dtls=Socks6Dtls(
                reactor, "127.0.0.1", self.dtlsPort, trustRoots=self.certificate
            ),
        ).addTimeout(WAIT, reactor)
        self.assertTrue(association.confirmed)
        self.assertEqual(len(self.relay.conversations), 1)
        [conversation] = self.relay.conversations.values()
        [served] = self.relay.associations.values()
        self.assertIs(served.conversation, conversation)
        association.sendTo(b"by address", "127.0.0.1", self.echoPort)
        association.sendTo(b"by name", "echo.example", self.echoPort)
        for _ in range(500):
            if len(receiver.datagrams) >= 2:
                break
            await deferLater(reactor, 0.01)
        source = Destination(IPv4Address("127.0.0.1"), self.echoPort)
        self.assertEqual(
            sorted(receiver.datagrams),
            [(b"by address", source), (b"by name", source)],
        )
        self.assertEqual(served.byteCounts(), (17, 17))
        association.close()
        self.assertIs(await receiver.lost.addTimeout(WAIT, reactor), ConnectionDone)
        for _ in range(100):
            if not self.relay.conversations and not self.relay.associations:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual((self.relay.conversations, self.relay.associations), ({}, {}))

    async def test_certificateChecked(self) -> None:
        """
        A client that does not trust the relay's certificate, or expects
        another name, fails with L{DtlsFailed}, and its association ends.
        """
        from twisted.internet.endpoints import TCP4ClientEndpoint

        from socksd.client.socks6 import DtlsFailed, Socks6Dtls, socks6UdpAssociate
        from socksd.test.test_client import makeCertificate

        await self.startRelay()
        stranger, _ = makeCertificate(ipAddresses=("127.0.0.1",))
        for dtls in (
            Socks6Dtls(reactor, "127.0.0.1", self.dtlsPort, trustRoots=stranger),
            Socks6Dtls(
                reactor,
                "127.0.0.1",
                self.dtlsPort,
                trustRoots=self.certificate,
                hostname="proxy.example",
            ),
        ):
            attempt = socks6UdpAssociate(
                TCP4ClientEndpoint(reactor, "127.0.0.1", self.socksPort),
                object(),
                dtls=dtls,
            )
            await self.assertFailure(attempt.addTimeout(WAIT, reactor), DtlsFailed)
        for _ in range(100):
            if not self.relay.associations:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(self.relay.associations, {})

    async def test_vectorsOverDtls(self) -> None:
        """
        The shared vectors, each in a DTLS record (with the live
        Association ID and the echo server's address): the empty trigger
        maps the association and gets the Confirmation on TCP, relaying
        nothing; a datagram is relayed and its answer comes back in the
        vector's layout; trailing bytes after Message Length are ignored;
        a Message Length larger than the record drops it; messages only a
        proxy sends are dropped.
        """
        await self.startRelay()
        raw, associationId = await self.association()
        peer = await self.peer()
        peer.channel.write(retarget(vector("udp-datagram-empty-trigger"), associationId))
        self.assertEqual(
            await raw.read(readUdpMessage), UdpAssociationConfirmation(associationId)
        )
        for name in (
            "udp-datagram-length-too-big",
            "udp-assoc-init",
            "udp-assoc-confirm",
        ):
            peer.channel.write(retarget(vector(name), associationId, None
                                        if not name.startswith("udp-datagram") else self.echoPort))
        peer.channel.write(
            retarget(vector("udp-datagram-trailing-padding"), associationId, self.echoPort)
        )
        expected = retarget(vector("udp-datagram-v4"), associationId, self.echoPort)
        self.assertEqual(await peer.next(), expected)
        peer.channel.write(expected)
        self.assertEqual(await peer.next(), expected)
        await deferLater(reactor, 0.1)
        self.assertEqual([data for data, _ in self.echo.received], [b"PING", b"PING"])
        self.assertEqual(peer.received, [])
        self.assertEqual(
            decodeUdpPacket(expected),
            UdpDatagram(
                associationId,
                Destination(IPv4Address("127.0.0.1"), self.echoPort),
                h("50494e47"),
            ),
        )

    async def test_cookieExchange(self) -> None:
        """
        A ClientHello gets a HelloVerifyRequest and leaves no state; the
        ClientHello that returns the cookie, sent again from another port
        (a spoofed source), gets another HelloVerifyRequest, not a
        conversation; bytes that are no ClientHello get nothing.
        """
        await self.startRelay()
        from socksd.dtls import clientContext

        sent: list[bytes] = []
        answers: list[tuple[bytes, Any]] = []

        class Capture(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                answers.append((data, addr))

        capture = Capture()
        port = reactor.listenUDP(0, capture, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        from OpenSSL import SSL

        connection = SSL.Connection(clientContext(self.certificate), None)
        connection.set_connect_state()
        # Only the first ClientHello goes to the relay from this port.
        channel = DtlsChannel(
            connection, sent.append, reactor, received=lambda data: None
        )
        self.addCleanup(channel.close)
        channel.start()
        port.write(sent[0], ("127.0.0.1", self.dtlsPort))
        for _ in range(200):
            if answers:
                break
            await deferLater(reactor, 0.01)
        verify, _ = answers[0]
        self.assertEqual((verify[0], verify[13]), (22, 3))  # HelloVerifyRequest
        self.assertEqual(self.relay.conversations, {})
        channel.datagramReceived(verify)
        withCookie = sent[-1]
        spoofedAnswers: list[tuple[bytes, Any]] = []

        class Spoofed(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                spoofedAnswers.append((data, addr))

        other = reactor.listenUDP(0, Spoofed(), interface="127.0.0.1")
        self.addCleanup(other.stopListening)
        before = len(answers)
        other.write(withCookie, ("127.0.0.1", self.dtlsPort))
        other.write(b"\x17\xfe\xfd" + bytes(40), ("127.0.0.1", self.dtlsPort))
        await deferLater(reactor, 0.2)
        self.assertEqual(self.relay.conversations, {})
        self.assertEqual(len(answers), before)
        # The spoofed source got a new HelloVerifyRequest (to its own
        # address, which a spoofer does not receive).
        self.assertEqual([(d[0], d[13]) for d, _ in spoofedAnswers], [(22, 3)])
        # From the address the cookie was made for, it opens a conversation.
        port.write(withCookie, ("127.0.0.1", self.dtlsPort))
        for _ in range(200):
            if self.relay.conversations:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(
            list(self.relay.conversations), [("127.0.0.1", port.getHost().port)]
        )

    async def test_limits(self) -> None:
        """
        At most C{maxPerHost} conversations per client host: more
        ClientHellos are dropped; a handshake that stops after the cookie
        is forgotten after C{handshakeTimeout}; an established
        conversation that carries no association is closed after
        C{idleTimeout}.
        """
        await self.startRelay(maxPerHost=1, handshakeTimeout=0.3, idleTimeout=0.5)
        first = await self.peer()
        from socksd.dtls import clientContext

        second = DtlsPeer(clientContext(self.certificate))
        port = reactor.listenUDP(0, second, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        port.connect("127.0.0.1", self.dtlsPort)
        second.start()
        await deferLater(reactor, 0.2)
        self.assertFalse(second.established.called)
        self.assertEqual(len(self.relay.conversations), 1)
        second.channel.close()
        self.assertEqual(await first.ended.addTimeout(WAIT, reactor), (
            "the peer closed the DTLS conversation"
        ))
        self.assertEqual(self.relay.conversations, {})

        # A handshake that stalls after the cookie.
        from OpenSSL import SSL

        stalled: list[bytes] = []

        class Stall(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                stalled.append(data)

        stall = reactor.listenUDP(0, Stall(), interface="127.0.0.1")
        self.addCleanup(stall.stopListening)
        connection = SSL.Connection(clientContext(self.certificate), None)
        connection.set_connect_state()
        sends: list[bytes] = []
        channel = DtlsChannel(connection, sends.append, reactor, received=lambda d: None)
        self.addCleanup(channel.close)
        channel.start()
        stall.write(sends[0], ("127.0.0.1", self.dtlsPort))
        for _ in range(200):
            if stalled:
                break
            await deferLater(reactor, 0.01)
        channel.datagramReceived(stalled[0])
        stall.write(sends[-1], ("127.0.0.1", self.dtlsPort))
        for _ in range(200):
            if self.relay.conversations:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(len(self.relay.conversations), 1)
        await deferLater(reactor, 0.5)
        self.assertEqual(self.relay.conversations, {})

    async def test_sameChecksAsUdp(self) -> None:
        """
        As over plain UDP: a DTLS conversation from another host than the
        client's may not use its association; once an association is
        mapped (here to TCP), DTLS datagrams for it are dropped; a wrong
        Association ID is dropped; none of this logs a traceback, and
        drops are logged at most once an interval.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        await self.startRelay()
        raw, associationId = await self.association()
        remote = Destination(IPv4Address("127.0.0.1"), self.echoPort)
        stranger = await self.peer(interface="127.0.0.2")
        for _ in range(20):
            stranger.channel.write(buildMessage(UdpDatagram(associationId, remote, b"x")))
        peer = await self.peer()
        peer.channel.write(buildMessage(UdpDatagram(associationId ^ 1, remote, b"y")))
        await deferLater(reactor, 0.2)
        self.assertEqual(self.echo.received, [])
        raw.transport.write(buildMessage(UdpDatagram(associationId, remote, b"tcp")))
        self.assertEqual(
            await raw.read(readUdpMessage), UdpAssociationConfirmation(associationId)
        )
        self.assertEqual(
            await raw.read(readUdpMessage), UdpDatagram(associationId, remote, b"tcp")
        )
        peer.channel.write(buildMessage(UdpDatagram(associationId, remote, b"dtls")))
        await deferLater(reactor, 0.2)
        self.assertEqual([data for data, _ in self.echo.received], [b"tcp"])
        self.assertEqual(peer.received, [])
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        drops = [e for e in events if "dropped" in e.get("log_format", "")]
        self.assertLessEqual(len(drops), 2, drops)

    async def test_conversationEndEndsAssociation(self) -> None:
        """
        When the client ends the DTLS conversation its association is
        mapped to, the association ends: the proxy closes its TCP
        connection.
        """
        await self.startRelay()
        raw, associationId = await self.association()
        peer = await self.peer()
        peer.channel.write(retarget(vector("udp-datagram-empty-trigger"), associationId))
        await raw.read(readUdpMessage)
        peer.channel.close()
        await raw.closed.addTimeout(WAIT, reactor)
        self.assertEqual(self.relay.associations, {})

    async def test_tooLargeForARecord(self) -> None:
        """
        An answer too large for one DTLS record is dropped (and logged),
        and the conversation goes on.
        """
        await self.startRelay()
        raw, associationId = await self.association()
        peer = await self.peer()
        remote = Destination(IPv4Address("127.0.0.1"), self.echoPort)
        big = b"b" * (MAX_PLAINTEXT - 19)
        self.assertFalse(peer.channel.write(buildMessage(UdpDatagram(associationId, remote, big))))
        fits = b"f" * (MAX_PLAINTEXT - 40)
        self.assertTrue(peer.channel.write(buildMessage(UdpDatagram(associationId, remote, fits))))
        self.assertEqual(
            decodeUdpPacket(await peer.next()).payload, fits
        )
        # The echo of a datagram sent over TCP, too large for a record.
        sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(sender.stopListening)
        served = self.relay.associations[associationId]
        served._remotes[(IPv4Address("127.0.0.1"), sender.getHost().port)] = None
        sender.write(b"z" * 20000, ("127.0.0.1", served.port.getHost().port))
        sender.write(b"small", ("127.0.0.1", served.port.getHost().port))
        self.assertEqual(decodeUdpPacket(await peer.next()).payload, b"small")
        self.assertEqual(served.dropped, 1)

    async def test_newHandshakeReplaces(self) -> None:
        """
        A client that lost its DTLS state and starts a new handshake from
        the same address gets a new conversation once its cookie returns
        (RFC 6347 4.2.8); the association mapped to the old one ends.
        """
        await self.startRelay()
        raw, associationId = await self.association()
        first = await self.peer()
        first.channel.write(retarget(vector("udp-datagram-empty-trigger"), associationId))
        await raw.read(readUdpMessage)
        number = first.port.getHost().port
        # The client's state is gone: no close_notify, the port is free.
        first.channel.closed = True
        await first.port.stopListening()
        [old] = self.relay.conversations.values()
        second = await self.peer(number=number)
        [new] = self.relay.conversations.values()
        self.assertIsNot(new, old)
        self.assertEqual(new.address, ("127.0.0.1", number))
        await raw.closed.addTimeout(WAIT, reactor)
        self.assertTrue(second.channel.established)
