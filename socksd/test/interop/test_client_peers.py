r"""
socksd's client endpoints against SOCKS servers no one here wrote:
Debian's microsocks (SOCKS5, RFC 1929) and Dante's danted (SOCKS4 and
SOCKS5), each started on a free loopback port for one test and stopped by
its cleanup.  Destinations are twisted servers on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import HostnameAddress, IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ClientEndpoint,
    TCP6ServerEndpoint,
    clientFromString,
)
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater

from socksd import errors as E
from socksd.client import (
    SOCKS4AClientEndpoint,
    SOCKS5ClientEndpoint,
    quoteArgument,
    socks5Resolve,
)
from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import listen
from socksd.test._tls import NO_TLS
from socksd.test.test_client import makeCertificate, usePluginsFromSource

#: The longest any one wait may take, in seconds.
WAIT = 20.0
PAYLOAD = os.urandom(256 * 1024)


def freePort() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Echo(Protocol):
    """Sends back what it receives."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Banner(Echo):
    """Speaks first, then echoes."""

    banner = b"220 socksd-interop ready\r\n"

    def connectionMade(self) -> None:
        self.transport.write(self.banner)


class Collector(Protocol):
    """
    Gathers what arrives; C{waitFor(n)} fires once C{n} bytes have come,
    C{lost} when the connection ends (and C{reason} says how).
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred = Deferred()
        self._waiting: list[tuple[int, Deferred]] = []
        self.madeBeforeData = None

    def connectionMade(self) -> None:
        self.madeBeforeData = not self.received

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for entry in list(self._waiting):
            if len(self.received) >= entry[0]:
                self._waiting.remove(entry)
                entry[1].callback(bytes(self.received))

    def waitFor(self, count: int) -> Deferred:
        if len(self.received) >= count:
            return succeed(bytes(self.received))
        d: Deferred = Deferred()
        self._waiting.append((count, d))
        return d.addTimeout(WAIT, reactor)

    def connectionLost(self, reason: Any) -> None:
        for _, d in self._waiting:
            d.errback(reason)
        self._waiting = []
        self.reason = reason
        self.lost.callback(None)


class PeerProcess(ProcessProtocol):
    """A peer server process; C{ended} fires when it exits."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


async def startPeer(
    testCase: InteropTestCase, argv: list[str], port: int
) -> PeerProcess:
    """
    Run C{argv} until the test ends, and wait until it accepts connections
    on C{port}.
    """
    process = PeerProcess()
    transport = reactor.spawnProcess(process, argv[0], argv, env=os.environ.copy())

    async def stop() -> None:
        if process.ended.called:
            return
        transport.signalProcess("TERM")
        try:
            await process.ended.addTimeout(5, reactor)
        except Exception:
            transport.signalProcess("KILL")
            await process.ended

    testCase.addCleanup(lambda: Deferred.fromCoroutine(stop()))
    for _ in range(int(WAIT * 10)):
        if process.ended.called:
            break
        try:
            probe = await TCP4ClientEndpoint(
                reactor, "127.0.0.1", port, timeout=1
            ).connect(Factory.forProtocol(Protocol))
        except ConnectionRefusedError:
            await deferLater(reactor, 0.1)
            continue
        probe.transport.loseConnection()
        return process
    testCase.fail(f"{argv[0]} did not listen on {port}: {bytes(process.output)!r}")


async def listenBoth(testCase: InteropTestCase, factory: Factory) -> int:
    """
    Listen on 127.0.0.1 and, where the host has it, on ::1 at the same port,
    so that C{localhost} reaches the server whichever address a proxy picks.
    """
    port = await listen(testCase, factory)
    try:
        listening = await TCP6ServerEndpoint(reactor, port, interface="::1").listen(
            factory
        )
    except CannotListenError:
        pass
    else:
        testCase.addCleanup(listening.stopListening)
    return port


async def roundTrip(
    testCase: InteropTestCase, endpoint: Any, payload: bytes = PAYLOAD
) -> Collector:
    """
    Connect C{endpoint} to an echo server, send C{payload}, check that it
    comes back whole, then close.
    """
    protocol = await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
        WAIT, reactor
    )
    protocol.transport.write(payload)
    received = await protocol.waitFor(len(payload))
    testCase.assertEqual(
        hashlib.sha256(received).digest(), hashlib.sha256(payload).digest()
    )
    protocol.transport.loseConnection()
    await protocol.lost
    return protocol


def proxyAt(port: int) -> TCP4ClientEndpoint:
    """The TCP endpoint of a proxy on 127.0.0.1."""
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT)


class MicrosocksTests(InteropTestCase):
    """
    The SOCKS5 endpoint through microsocks.
    """

    timeout = 60

    async def startMicrosocks(self, *extra: str) -> int:
        path = requireTool("microsocks")
        port = freePort()
        await startPeer(self, [path, "-i", "127.0.0.1", "-p", str(port), *extra], port)
        return port

    async def test_echoByAddress(self) -> None:
        """
        A connection to an IPv4 literal carries 256 KiB both ways unchanged;
        the transport's peer is the destination, its host the local end of
        the proxy connection.
        """
        echoPort = await listen(self, Factory.forProtocol(Echo))
        proxyPort = await self.startMicrosocks()
        endpoint = SOCKS5ClientEndpoint(proxyAt(proxyPort), "127.0.0.1", echoPort)
        protocol = await endpoint.connect(Factory.forProtocol(Collector))
        self.assertEqual(
            protocol.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", echoPort)
        )
        host = protocol.transport.getHost()
        self.assertEqual(host.host, "127.0.0.1")
        self.assertNotIn(host.port, (proxyPort, echoPort))
        protocol.transport.loseConnection()
        await protocol.lost
        await roundTrip(self, endpoint)

    async def test_echoByName(self) -> None:
        """
        A destination given by name is resolved by the proxy; the peer is
        a C{HostnameAddress}.
        """
        echoPort = await listenBoth(self, Factory.forProtocol(Echo))
        proxyPort = await self.startMicrosocks()
        endpoint = SOCKS5ClientEndpoint(proxyAt(proxyPort), "localhost", echoPort)
        protocol = await roundTrip(self, endpoint)
        self.assertEqual(
            protocol.transport.getPeer(), HostnameAddress(b"localhost", echoPort)
        )

    async def test_usernamePassword(self) -> None:
        """
        With C{-u}/C{-P}, the right credentials get through; wrong ones, and
        none, are L{E.AuthenticationFailed}.
        """
        echoPort = await listen(self, Factory.forProtocol(Echo))
        proxyPort = await self.startMicrosocks("-u", "alice", "-P", "s3cret")
        good = SOCKS5ClientEndpoint(
            proxyAt(proxyPort),
            "127.0.0.1",
            echoPort,
            username="alice",
            password="s3cret",
        )
        await roundTrip(self, good)
        for credentials in ({"username": "alice", "password": "wrong"}, {}):
            endpoint = SOCKS5ClientEndpoint(
                proxyAt(proxyPort), "127.0.0.1", echoPort, **credentials
            )
            with self.assertRaises(E.AuthenticationFailed):
                await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
                    WAIT, reactor
                )

    async def test_refused(self) -> None:
        """
        A destination port nobody listens on is L{E.ConnectionRefused} with
        reply code 5.
        """
        proxyPort = await self.startMicrosocks()
        endpoint = SOCKS5ClientEndpoint(proxyAt(proxyPort), "127.0.0.1", freePort())
        with self.assertRaises(E.ConnectionRefused) as caught:
            await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
                WAIT, reactor
            )
        self.assertEqual(caught.exception.replyCode, 5)

    async def test_destinationSpeaksFirst(self) -> None:
        """
        A destination's banner, which may come in the same segment as the
        proxy's reply, reaches the application whole, after
        C{connectionMade}.
        """
        bannerPort = await listen(self, Factory.forProtocol(Banner))
        proxyPort = await self.startMicrosocks()
        endpoint = SOCKS5ClientEndpoint(proxyAt(proxyPort), "127.0.0.1", bannerPort)
        protocol = await endpoint.connect(Factory.forProtocol(Collector))
        self.assertTrue(protocol.madeBeforeData)
        banner = await protocol.waitFor(len(Banner.banner))
        self.assertEqual(banner, Banner.banner)
        protocol.transport.loseConnection()
        await protocol.lost

    async def test_resolveUnsupported(self) -> None:
        """
        microsocks does not serve Tor's RESOLVE: its 07 reply is
        L{E.UnsupportedCommand} with reply code 7.
        """
        proxyPort = await self.startMicrosocks()
        with self.assertRaises(E.UnsupportedCommand) as caught:
            await socks5Resolve(proxyAt(proxyPort), "localhost").addTimeout(
                WAIT, reactor
            )
        self.assertEqual(caught.exception.replyCode, 7)

    async def test_endpointString(self) -> None:
        """
        C{clientFromString} finds the C{socks5:} plugin, and the endpoint
        it builds, with credentials, carries the echo.
        """
        usePluginsFromSource(self)
        echoPort = await listen(self, Factory.forProtocol(Echo))
        proxyPort = await self.startMicrosocks("-u", "alice", "-P", "pa:ss")
        endpoint = clientFromString(
            reactor,
            f"socks5:127.0.0.1:{echoPort}:proxy=tcp\\:127.0.0.1\\:{proxyPort}"
            f":user=alice:password={quoteArgument('pa:ss')}",
        )
        await roundTrip(self, endpoint)

    async def startTLSEcho(self) -> tuple[int, str]:
        """
        A TLS echo server on 127.0.0.1 with a fresh certificate for
        C{localhost}; return its port and the certificate's PEM file.
        """
        from twisted.internet.ssl import PrivateCertificate

        certificate, key = makeCertificate(("localhost",), ("127.0.0.1",))
        pem = Path(self.mktemp())
        pem.write_bytes(certificate)
        options = PrivateCertificate.loadPEM(certificate + key).options()
        port = await SSL4ServerEndpoint(
            reactor, 0, options, interface="127.0.0.1"
        ).listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        return port.getHost().port, str(pem)

    async def test_tlsToDestination(self) -> None:
        """
        C{tls=yes} with C{trustRoots=} speaks TLS to the destination through
        the proxy, checking its certificate for the name C{tlsHostname=}
        gives.
        """
        usePluginsFromSource(self)
        tlsPort, pem = await self.startTLSEcho()
        proxyPort = await self.startMicrosocks()
        endpoint = clientFromString(
            reactor,
            f"socks5:127.0.0.1:{tlsPort}:tls=yes:tlsHostname=localhost"
            f":trustRoots={quoteArgument(pem)}"
            f":proxy=tcp\\:127.0.0.1\\:{proxyPort}",
        )
        await roundTrip(self, endpoint, PAYLOAD[:65536])

    async def test_tlsWrongName(self) -> None:
        """
        A certificate that does not match C{tlsHostname=} ends the
        connection with a verification failure before any data.
        """
        usePluginsFromSource(self)
        tlsPort, pem = await self.startTLSEcho()
        proxyPort = await self.startMicrosocks()
        endpoint = clientFromString(
            reactor,
            f"socks5:127.0.0.1:{tlsPort}:tls=yes:tlsHostname=wrong.example"
            f":trustRoots={quoteArgument(pem)}:proxy=tcp\\:127.0.0.1\\:{proxyPort}",
        )
        protocol = await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
            WAIT, reactor
        )
        protocol.transport.write(b"secret")
        await protocol.lost.addTimeout(WAIT, reactor)
        self.assertEqual(bytes(protocol.received), b"")
        from service_identity import VerificationError

        self.assertIsInstance(protocol.reason.value, VerificationError)

    test_tlsToDestination.skip = test_tlsWrongName.skip = NO_TLS


class DanteTests(InteropTestCase):
    """
    The SOCKS5 and SOCKS4 endpoints through Dante's danted.
    """

    timeout = 60

    async def startDante(self, method: str = "none") -> int:
        path = requireTool("danted")
        port = freePort()
        directory = Path(self.mktemp())
        directory.mkdir()
        users = (
            ["user.privileged: root", "user.unprivileged: nobody"]
            if os.geteuid() == 0
            else []
        )
        config = directory / "danted.conf"
        config.write_text(
            "\n".join(
                [
                    "logoutput: stderr",
                    f"internal: 127.0.0.1 port = {port}",
                    "external: 127.0.0.1",
                    f"socksmethod: {method}",
                    "clientmethod: none",
                    *users,
                    "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
                    "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            directory.chmod(0o755)
            config.chmod(0o644)
        await startPeer(
            self,
            [path, "-f", str(config), "-p", str(directory / "danted.pid"), "-N", "1"],
            port,
        )
        return port

    async def test_socks5Echo(self) -> None:
        """
        SOCKS5 to an IPv4 literal carries 256 KiB both ways unchanged.
        """
        echoPort = await listen(self, Factory.forProtocol(Echo))
        proxyPort = await self.startDante()
        protocol = await roundTrip(
            self, SOCKS5ClientEndpoint(proxyAt(proxyPort), "127.0.0.1", echoPort)
        )
        self.assertEqual(
            protocol.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", echoPort)
        )

    async def test_socks4Echo(self) -> None:
        """
        SOCKS4 to an IPv4 literal, with a user id, carries 256 KiB both ways
        unchanged.
        """
        echoPort = await listen(self, Factory.forProtocol(Echo))
        proxyPort = await self.startDante()
        await roundTrip(
            self,
            SOCKS4AClientEndpoint(
                proxyAt(proxyPort), "127.0.0.1", echoPort, userId="nobody"
            ),
        )

    async def test_socks5Refused(self) -> None:
        """
        A destination port nobody listens on is L{E.ConnectionRefused} with
        reply code 5.
        """
        proxyPort = await self.startDante()
        endpoint = SOCKS5ClientEndpoint(proxyAt(proxyPort), "127.0.0.1", freePort())
        with self.assertRaises(E.ConnectionRefused) as caught:
            await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
                WAIT, reactor
            )
        self.assertEqual(caught.exception.replyCode, 5)

    async def test_socks4Refused(self) -> None:
        """
        Over SOCKS4 the same refusal is code 91: L{E.NotAllowed}.
        """
        proxyPort = await self.startDante()
        endpoint = SOCKS4AClientEndpoint(proxyAt(proxyPort), "127.0.0.1", freePort())
        with self.assertRaises(E.NotAllowed) as caught:
            await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
                WAIT, reactor
            )
        self.assertEqual(caught.exception.replyCode, 0x5B)

    async def test_methodRequired(self) -> None:
        """
        A Dante that requires username authentication selects no method
        for a client without credentials: L{E.AuthenticationFailed}.
        """
        proxyPort = await self.startDante("username")
        endpoint = SOCKS5ClientEndpoint(proxyAt(proxyPort), "127.0.0.1", 9)
        with self.assertRaises(E.AuthenticationFailed):
            await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
                WAIT, reactor
            )

    async def test_proxyClosesOnResolve(self) -> None:
        """
        Dante closes the connection on Tor's RESOLVE command: a clear
        L{ProxyDisconnected}, not a hang.
        """
        from socksd.client import ProxyDisconnected

        proxyPort = await self.startDante()
        with self.assertRaises(ProxyDisconnected) as caught:
            await socks5Resolve(proxyAt(proxyPort), "localhost").addTimeout(
                WAIT, reactor
            )
        self.assertIn("SOCKS5 handshake", str(caught.exception))

    async def test_endpointString(self) -> None:
        """
        C{clientFromString} builds a C{socks4a:} endpoint that carries the
        echo through Dante.
        """
        usePluginsFromSource(self)
        echoPort = await listen(self, Factory.forProtocol(Echo))
        proxyPort = await self.startDante()
        endpoint = clientFromString(
            reactor,
            f"socks4a:127.0.0.1:{echoPort}:proxy=tcp\\:127.0.0.1\\:{proxyPort}:userId=me",
        )
        await roundTrip(self, endpoint)
