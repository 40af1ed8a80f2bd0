"""
python-socks (PyPI), a client no one here wrote, talks to socksd over
SOCKS4, SOCKS4A and SOCKS5.
"""

from __future__ import annotations

import hashlib
import os
import socket

from zope.interface import implementer

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from socksd.test.interop import InteropTestCase
from socksd.test.interop._support import TEST_NAME, listen, startSocksd

try:
    from python_socks import ProxyType
    from python_socks.sync import Proxy
except ImportError:  # pragma: no cover
    Proxy = None


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echo everything; on the peer's EOF, finish writing, then close."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


def roundTrip(proxyType, proxyPort: int, host: str, port: int, rdns: bool, payload: bytes, **kw) -> bytes:
    """Connect with python-socks (blocking, in a thread), echo C{payload}."""
    proxy = Proxy(proxyType, "127.0.0.1", proxyPort, rdns=rdns, **kw)
    sock = proxy.connect(dest_host=host, dest_port=port, timeout=20)
    try:
        sock.settimeout(20)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)
    finally:
        sock.close()


class PythonSocksTests(InteropTestCase):
    """
    python-socks gets byte-exact echoes through socksd.
    """

    def setUp(self) -> None:
        super().setUp()
        if Proxy is None:
            self.skipTest("python-socks is not installed (pip install '.[test]')")

    async def check(self, proxyType, host: str, rdns: bool, **kw) -> None:
        echoPort = await listen(self, Factory.forProtocol(Echo))
        socksPort = await startSocksd(self)
        payload = os.urandom(1 << 20)
        received = await deferToThread(
            roundTrip, proxyType, socksPort, host, echoPort, rdns, payload, **kw
        )
        self.assertEqual(len(received), len(payload))
        self.assertEqual(hashlib.sha256(received).digest(), hashlib.sha256(payload).digest())

    async def test_socks4(self) -> None:
        """
        SOCKS4 with an IPv4 address.
        """
        await self.check(ProxyType.SOCKS4, "127.0.0.1", rdns=False)

    async def test_socks4a(self) -> None:
        """
        SOCKS4A with a name only socksd's resolver knows.
        """
        await self.check(ProxyType.SOCKS4, TEST_NAME, rdns=True)

    async def test_socks5(self) -> None:
        """
        SOCKS5 with an IPv4 address.
        """
        await self.check(ProxyType.SOCKS5, "127.0.0.1", rdns=False)

    async def test_socks5Name(self) -> None:
        """
        SOCKS5 with a domain name resolved by socksd.
        """
        await self.check(ProxyType.SOCKS5, TEST_NAME, rdns=True)
