"""
SOCKS6 UDP over DTLS against a DTLS implementation no one here wrote:
OpenSSL's own client (C{openssl s_client -dtls1_2}) completes a handshake
with socksd's DTLS relay port, checks its certificate, and carries a SOCKS6
Datagram message for a live association there and back; and C{twistd
socksd --socks6-dtls-listen} serves socksd's own client.
"""

from __future__ import annotations

import os
import sys
from ipaddress import IPv4Address
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

import socksd
from socksd.address import Destination
from socksd.dtls import dtlsMissing
from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.test_socks6_dtls import writeCertificate
from socksd.test.test_socks6_wanted import ANY4, Echo, WantedTestsMixin, freePort
from socksd.wire.socks6 import (
    Command,
    UdpAssociationConfirmation,
    UdpAssociationInit,
    UdpDatagram,
    buildMessage,
    readUdpMessage,
)

WAIT = 20.0
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))


class Collect(ProcessProtocol):
    """A tool's output, and its end."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)

    async def waitFor(self, wanted: bytes) -> None:
        """Wait until the output holds C{wanted} (at most L{WAIT} s)."""
        for _ in range(int(WAIT * 20)):
            if wanted in self.output or self.ended.called:
                break
            await deferLater(reactor, 0.05)
        if wanted not in self.output:
            raise AssertionError(
                f"{wanted!r} not in the output:\n"
                + self.output.decode("utf-8", "replace")
            )


def spawn(testCase: Any, executable: str, args: list[str], **kwargs: Any) -> Collect:
    """Run a tool until the test ends."""
    tool = Collect()
    process = reactor.spawnProcess(tool, executable, [executable, *args], **kwargs)

    async def stop() -> None:
        if not tool.ended.called:
            process.signalProcess("TERM")
            await tool.ended

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    return tool


class OpenSSLClientTests(WantedTestsMixin, InteropTestCase):
    """
    C{openssl s_client -dtls1_2} against socksd's DTLS relay port.
    """

    def setUp(self) -> None:
        super().setUp()
        if dtlsMissing():
            self.skipTest(dtlsMissing())
        self.openssl = requireTool("openssl")

    async def test_handshakeAndDatagram(self) -> None:
        """
        s_client completes a DTLS 1.2 handshake with the relay port and
        verifies its certificate; the Datagram message it sends (for an
        association made over TCP) maps the association (Confirmation on
        TCP), reaches the echo server, and the echo comes back to s_client
        as a Datagram message.
        """
        from socksd.server.socks6.dtls import DtlsRelay, parseDtlsDescription

        certificate, key, cert = writeCertificate(self)
        settings = parseDtlsDescription(
            f"dtls:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        await self.startSocksd()
        relay = DtlsRelay(reactor, settings.context())
        self.factory.socks6Dtls = relay
        port = relay.listen(0, "127.0.0.1")
        self.addCleanup(port.stopListening)
        echo = Echo()
        echoPort = self.listenUdp(echo, "127.0.0.1")
        raw, reply = await self.request(Command.UDP_ASSOCIATE, ANY4)
        init = await raw.read(readUdpMessage)
        self.assertIsInstance(init, UdpAssociationInit)
        remote = Destination(IPv4Address("127.0.0.1"), echoPort)
        message = buildMessage(UdpDatagram(init.associationId, remote, b"from s_client"))
        tool = spawn(
            self,
            self.openssl,
            [
                "s_client",
                "-dtls1_2",
                "-connect",
                f"127.0.0.1:{port.getHost().port}",
                "-CAfile",
                cert,
                "-verify_return_error",
                "-ign_eof",
            ],
            env={"PATH": os.environ.get("PATH", "")},
        )
        tool.transport.write(message)
        self.assertEqual(
            await raw.read(readUdpMessage),
            UdpAssociationConfirmation(init.associationId),
        )
        await tool.waitFor(message)
        self.assertEqual([data for data, _ in echo.received], [b"from s_client"])
        self.assertIn(b"Protocol  : DTLSv1.2", tool.output)
        self.assertIn(b"Verification: OK", tool.output)
        self.assertNotIn(b"Cipher is (NONE)", tool.output)
        [conversation] = relay.conversations.values()
        self.assertIs(relay.associations[init.associationId].conversation, conversation)

    async def test_untrustedCertificateRefused(self) -> None:
        """
        Against a CA file that does not hold the relay's certificate,
        s_client's verification fails: the certificate is what it checks.
        """
        from socksd.server.socks6.dtls import DtlsRelay, parseDtlsDescription
        from socksd.test.test_client import makeCertificate

        certificate, key, cert = writeCertificate(self)
        stranger = os.path.join(self.mktemp() + ".pem")
        with open(stranger, "wb") as handle:
            handle.write(makeCertificate(ipAddresses=("127.0.0.1",))[0])
        settings = parseDtlsDescription(
            f"dtls:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        relay = DtlsRelay(reactor, settings.context())
        port = relay.listen(0, "127.0.0.1")
        self.addCleanup(port.stopListening)
        tool = spawn(
            self,
            self.openssl,
            [
                "s_client",
                "-dtls1_2",
                "-connect",
                f"127.0.0.1:{port.getHost().port}",
                "-CAfile",
                stranger,
                "-verify_return_error",
            ],
            env={"PATH": os.environ.get("PATH", "")},
        )
        tool.transport.closeStdin()
        reason = await tool.ended.addTimeout(WAIT, reactor)
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertIn(b"certificate verify failed", tool.output)
        self.assertIn(b"Cipher is (NONE)", tool.output)


class TwistdDtlsTests(InteropTestCase):
    """
    C{twistd -n socksd --socks6-dtls-listen ...} serves socksd's client.
    """

    def setUp(self) -> None:
        super().setUp()
        if dtlsMissing():
            self.skipTest(dtlsMissing())

    async def test_clientThroughTwistd(self) -> None:
        """
        socksd's client associates over TCP with a twistd socksd and sends
        its datagrams over the DTLS port the option opened; the echo comes
        back; stopping twistd ends it cleanly.
        """
        from socksd.client.socks6 import Socks6Dtls, socks6UdpAssociate

        certificate, key, cert = writeCertificate(self)
        socksPort, dtlsPort = freePort(), freePort()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        tool = spawn(
            self,
            twistd,
            [
                "-n",
                "--pidfile=",
                "socksd",
                "--listen",
                f"tcp:{socksPort}:interface=127.0.0.1",
                "--socks6-dtls-listen",
                f"dtls:{dtlsPort}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            ],
            env=dict(os.environ, PYTHONPATH=CHECKOUT),
            path=CHECKOUT,
        )
        await tool.waitFor(b"DtlsRelay starting on")
        echo = Echo()
        echoPort = reactor.listenUDP(0, echo, interface="127.0.0.1")
        self.addCleanup(echoPort.stopListening)

        class Receiver:
            def __init__(self) -> None:
                self.got: list[bytes] = []

            def datagramReceived(self, payload: bytes, source: Any) -> None:
                self.got.append(payload)

        receiver = Receiver()
        association = await socks6UdpAssociate(
            TCP4ClientEndpoint(reactor, "127.0.0.1", socksPort),
            receiver,
            dtls=Socks6Dtls(reactor, "127.0.0.1", dtlsPort, trustRoots=certificate),
        ).addTimeout(WAIT, reactor)
        association.sendTo(b"through twistd", "127.0.0.1", echoPort.getHost().port)
        for _ in range(400):
            if receiver.got:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(receiver.got, [b"through twistd"])
        association.close()
        await deferLater(reactor, 0.1)
        tool.transport.signalProcess("TERM")
        reason = await tool.ended.addTimeout(WAIT, reactor)
        self.assertIsInstance(reason, (ProcessDone, ProcessTerminated))
        self.assertNotIn(b"Traceback", tool.output)
