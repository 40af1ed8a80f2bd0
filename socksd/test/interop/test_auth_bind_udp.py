"""
Real clients against socksd's authentication and UDP ASSOCIATE: curl and
python-socks with usernames and passwords, and Dante's C{socksify} wrapping
a program's UDP calls.

(python-socks speaks neither BIND nor UDP ASSOCIATE.  Dante's client does
BIND for a socksified C{bind()}/C{listen()}, and socksd serves it, but a
Python program's C{accept()} then fails with EINVAL inside the wrapper, so
BIND is tested with socksd's own raw clients in L{socksd.test.test_bind}.)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from socksd.auth import Authenticator, portalFromCheckers
from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import PAGE, listen, startWeb
from socksd.test.test_bind import startSocksd
from socksd.testing import EchoProtocol


async def startAuthSocksd(testCase: InteropTestCase) -> int:
    """socksd requiring alice's password (failure delay 0.2 s); its port."""
    checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
    authenticator = Authenticator(
        portalFromCheckers([checker]), reactor, failureDelay=0.2
    )
    factory, port = await startSocksd(testCase, authenticator=authenticator)
    return port


class CurlAuthTests(InteropTestCase):
    """curl with --socks5 and a username and password."""

    def setUp(self) -> None:
        super().setUp()
        self.curl = requireTool("curl")

    async def curlWith(self, proxy: str) -> tuple[bytes, bytes, int]:
        webPort = await startWeb(self)
        socksPort = await startAuthSocksd(self)
        return await getProcessOutputAndValue(
            self.curl,
            [
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--noproxy",
                "",
                "--socks5",
                proxy.format(port=socksPort),
                f"http://127.0.0.1:{webPort}/page",
            ],
            env={},
            reactor=reactor,
        )

    async def test_rightPassword(self) -> None:
        """
        curl --socks5 alice:secret@host:port fetches the page.
        """
        out, err, code = await self.curlWith("alice:secret@127.0.0.1:{port}")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)

    async def test_wrongPassword(self) -> None:
        """
        A wrong password gives curl's SOCKS5 authentication error at once
        (after the short failure delay), not a hang or a timeout.
        """
        started = reactor.seconds()
        out, err, code = await self.curlWith("alice:wrong@127.0.0.1:{port}")
        self.assertNotEqual(code, 0)
        self.assertNotEqual(code, 28)  # curl's timeout
        self.assertIn(b"rejected", err.lower() + b" " + str(code).encode())
        self.assertLess(reactor.seconds() - started, 10)
        self.assertEqual(out, b"")


try:
    from python_socks import ProxyType
    from python_socks.sync import Proxy
except ImportError:  # pragma: no cover
    Proxy = None


def _roundTrip(proxyPort: int, echoPort: int, password: str) -> bytes:
    """Through python-socks with alice's credentials: send and read back."""
    proxy = Proxy(
        ProxyType.SOCKS5, "127.0.0.1", proxyPort, username="alice", password=password
    )
    sock = proxy.connect(dest_host="127.0.0.1", dest_port=echoPort, timeout=10)
    try:
        sock.sendall(b"credentials ok")
        return sock.recv(100)
    finally:
        sock.close()


class PythonSocksAuthTests(InteropTestCase):
    """python-socks with a username and password."""

    def setUp(self) -> None:
        super().setUp()
        if Proxy is None:
            self.skipTest("python-socks is not installed")

    async def test_credentials(self) -> None:
        """
        The right password gets a working tunnel; a wrong one raises
        python-socks' proxy error.
        """
        echoPort = await listen(self, Factory.forProtocol(EchoProtocol))
        socksPort = await startAuthSocksd(self)
        self.assertEqual(
            await deferToThread(_roundTrip, socksPort, echoPort, "secret"),
            b"credentials ok",
        )
        from python_socks import ProxyError

        with self.assertRaises(ProxyError):
            await deferToThread(_roundTrip, socksPort, echoPort, "wrong")


class _Echo(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


_UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"through socksify", ("127.0.0.1", int(sys.argv[1])))
data, addr = s.recvfrom(100)
print(data.decode(), addr[1])
"""


class SocksifyUdpTests(InteropTestCase):
    """Dante's socksify sends a program's UDP through socksd."""

    async def test_udpEcho(self) -> None:
        """
        A Python program's sendto()/recvfrom(), wrapped by socksify, reaches
        a UDP echo server through a UDP association and gets the echo back;
        socksd logs the association with the bytes both ways.
        """
        socksify = requireTool("socksify")
        echo = reactor.listenUDP(0, _Echo(), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        echoPort = echo.getHost().port
        factory, socksPort = await startSocksd(self)
        conf = self.mktemp()
        with open(conf, "w") as f:
            f.write(
                "route {\n"
                f"  from: 0.0.0.0/0 to: 0.0.0.0/0 via: 127.0.0.1 port = {socksPort}\n"
                "  proxyprotocol: socks_v5\n"
                "  command: connect bind udpassociate\n"
                "  method: none\n"
                "}\n"
            )
        script = self.mktemp()
        with open(script, "w") as f:
            f.write(_UDP_CLIENT)
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        out, err, code = await getProcessOutputAndValue(
            socksify,
            [sys.executable, script, str(echoPort)],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "SOCKS_CONF": conf,
                # Dante sends loopback destinations direct unless told not to.
                "SOCKS_AUTOADD_LANROUTES": "no",
            },
            reactor=reactor,
        )
        self.assertEqual(code, 0, err)
        self.assertEqual(out.split(), [b"through", b"socksify", str(echoPort).encode()])
        from twisted.internet.task import deferLater

        def associations():
            return [
                e
                for e in events
                if e.get("log_namespace") == "socksd.connection"
                and e.get("commandCode") == 3
            ]

        # The association's event comes when socksd sees the control
        # connection close, which may be just after the program exits.
        for _ in range(100):
            if associations():
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(associations()), 1, associations())
        [event] = associations()
        self.assertGreater(event["bytesUp"], 0)
        self.assertGreater(event["bytesDown"], 0)
