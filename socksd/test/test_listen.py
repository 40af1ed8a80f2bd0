"""
Listeners beyond plain TCP, on loopback: SOCKS over TLS (C{ssl:} strports,
a certificate generated at test time, socksd's own client endpoint over a
TLS endpoint to the proxy) and behind a load balancer (C{haproxy:tcp:},
PROXY protocol v1 and v2 headers sent by the test: the log event and the
policy see the address from the header).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from socksd.client import SOCKS5ClientEndpoint
from socksd.policy import Policy
from socksd.server import ServerConfig, SocksServerFactory
from socksd.test.test_chain import PAYLOAD, Collector, settle
from socksd.test.interop import InteropTestCase
from socksd.test._tls import NO_TLS
from socksd.test.test_client import makeCertificate
from socksd.testing import EchoProtocol, FakeResolver

#: The longest any one wait may take.
WAIT = 20.0
#: The address the PROXY headers claim for the client.
REAL_CLIENT = ("192.0.2.99", 56324)


def proxyV1(port: int) -> bytes:
    """A PROXY protocol v1 header from L{REAL_CLIENT} to 127.0.0.1:C{port}."""
    host, sourcePort = REAL_CLIENT
    return f"PROXY TCP4 {host} 127.0.0.1 {sourcePort} {port}\r\n".encode("ascii")


def proxyV2(port: int) -> bytes:
    """A PROXY protocol v2 header (PROXY, TCP over IPv4), as L{proxyV1}."""
    host, sourcePort = REAL_CLIENT
    addresses = (
        socket.inet_aton(host)
        + socket.inet_aton("127.0.0.1")
        + struct.pack("!HH", sourcePort, port)
    )
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + b"\x21\x11"
        + struct.pack("!H", len(addresses))
        + addresses
    )


def socks5Connect(port: int) -> bytes:
    """A SOCKS5 greeting (method 00) and CONNECT to 127.0.0.1:C{port}."""
    return (
        b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", port)
    )


class RawClient(Protocol):
    """Sends its bytes on connect; C{closed} fires with what came back."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        # The method selection, the reply (10 bytes) and the echo.
        if len(self.received) >= 12 + len(b"ping"):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(self.received)


class ListenTests(TestCase):
    """
    socksd behind C{ssl:} and C{haproxy:} listeners.
    """

    timeout = 30

    async def echo(self) -> int:
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(EchoProtocol)
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def serve(self, description: str, **kwargs: Any) -> int:
        factory = SocksServerFactory(
            reactor, resolver=FakeResolver({}), config=ServerConfig(), **kwargs
        )
        port = await serverFromString(reactor, description).listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def connectionEvents(self, events: Any) -> list[dict[str, Any]]:
        return [e for e in events if e.get("log_namespace") == "socksd.connection"]

    async def test_tls(self) -> None:
        """
        socksd's SOCKS5 client endpoint, over a TLS endpoint to an C{ssl:}
        listener (a certificate made for the test, checked against it),
        carries bytes to the echo server and back.
        """
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        certificate, key = makeCertificate(dnsNames=("localhost",))
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "cert.pem").write_bytes(certificate)
        (directory / "key.pem").write_bytes(key)
        echoPort = await self.echo()
        proxyPort = await self.serve(
            f"ssl:0:privateKey={directory / 'key.pem'}"
            f":certKey={directory / 'cert.pem'}:interface=127.0.0.1"
        )
        tls = wrapClientTLS(
            optionsForClientTLS(
                "localhost", trustRoot=Certificate.loadPEM(certificate)
            ),
            TCP4ClientEndpoint(reactor, "127.0.0.1", proxyPort),
        )
        endpoint = SOCKS5ClientEndpoint(tls, "127.0.0.1", echoPort)
        protocol = await endpoint.connect(Factory.forProtocol(Collector)).addTimeout(
            WAIT, reactor
        )
        protocol.transport.write(PAYLOAD)
        try:
            received = await protocol.done.addTimeout(WAIT, reactor)
        finally:
            protocol.transport.loseConnection()
            await settle()
        self.assertEqual(received, PAYLOAD)

    async def haproxy(self, header: Any, **kwargs: Any) -> tuple[bytes, dict[str, Any]]:
        """
        Connect to a C{haproxy:tcp:} listener, send C{header(port)} and a
        SOCKS5 CONNECT to the echo server, then C{ping}.

        @return: what came back, and the connection's log event.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        echoPort = await self.echo()
        proxyPort = await self.serve("haproxy:tcp:0:interface=127.0.0.1", **kwargs)
        client = RawClient(header(proxyPort) + socks5Connect(echoPort) + b"ping")
        await TCP4ClientEndpoint(reactor, "127.0.0.1", proxyPort).connect(
            Factory.forProtocol(lambda: client)
        )
        received = await client.closed.addTimeout(WAIT, reactor)
        await settle()
        for _ in range(int(WAIT / 0.02)):
            if self.connectionEvents(events):
                break
            from twisted.internet.task import deferLater

            await deferLater(reactor, 0.02, lambda: None)
        [event] = self.connectionEvents(events)
        return received, event

    test_tls.skip = NO_TLS

    async def test_proxyV1(self) -> None:
        """
        Behind a PROXY v1 header, the tunnel works and the log event names
        the client from the header.
        """
        received, event = await self.haproxy(proxyV1)
        self.assertTrue(received.endswith(b"ping"), received)
        self.assertEqual(event["client"], "192.0.2.99:56324")

    async def test_proxyV2(self) -> None:
        """
        Behind a PROXY v2 header, likewise.
        """
        received, event = await self.haproxy(proxyV2)
        self.assertTrue(received.endswith(b"ping"), received)
        self.assertEqual(event["client"], "192.0.2.99:56324")

    async def test_policySeesHeaderAddress(self) -> None:
        """
        A policy denying the header's client address refuses it: nothing
        is answered, and the event says so.
        """
        policy = Policy.fromOptions(denyClients=["192.0.2.99/32"])
        for header in (proxyV1, proxyV2):
            received, event = await self.haproxy(header, policy=policy)
            self.assertEqual(received, b"")
            self.assertEqual(event["client"], "192.0.2.99:56324")
            self.assertEqual(event["reason"], "client refused by policy")


def _pythonSocksOverTLS(proxyPort: int, echoPort: int, certificate: bytes) -> bytes:
    """
    python-socks (v2, blocking; run in a thread): SOCKS5 over TLS to the
    proxy, then an echo of C{ping} through it.
    """
    import ssl

    from python_socks import ProxyType
    from python_socks.sync.v2 import Proxy

    context = ssl.create_default_context(cadata=certificate.decode("ascii"))
    proxy = Proxy(ProxyType.SOCKS5, "127.0.0.1", proxyPort, proxy_ssl=context)
    stream = proxy.connect(dest_host="127.0.0.1", dest_port=echoPort, timeout=WAIT)
    try:
        stream.write(b"ping")
        return stream.read_exactly(4)
    finally:
        stream.close()


class PythonSocksTLSTests(InteropTestCase):
    """
    python-socks' C{proxy_ssl}: a client no one here wrote, SOCKS5 over TLS.
    """

    timeout = 30
    skip = NO_TLS

    async def test_proxySSL(self) -> None:
        """
        python-socks reaches the echo server through socksd's C{ssl:}
        listener, checking the certificate made for 127.0.0.1.
        """
        from importlib.util import find_spec

        try:
            found = find_spec("python_socks.sync.v2") is not None
        except ImportError:
            found = False
        if not found:
            raise SkipTest("python-socks with sync.v2 is not installed")
        from twisted.internet.threads import deferToThread

        certificate, key = makeCertificate(ipAddresses=("127.0.0.1",))
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "cert.pem").write_bytes(certificate)
        (directory / "key.pem").write_bytes(key)
        listen = ListenTests("test_tls")
        listen.addCleanup = self.addCleanup  # type: ignore[method-assign]
        echoPort = await listen.echo()
        proxyPort = await listen.serve(
            f"ssl:0:privateKey={directory / 'key.pem'}"
            f":certKey={directory / 'cert.pem'}:interface=127.0.0.1"
        )
        received = await deferToThread(
            _pythonSocksOverTLS, proxyPort, echoPort, certificate
        )
        self.assertEqual(received, b"ping")
        await settle()
