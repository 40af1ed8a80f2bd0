"""
curl, through socksd, from a web server that resets the connection in the
middle of a response whose end is the connection's end (HTTP/1.0, no
Content-Length): curl must report the reset, not a complete download.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue

from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import startSocksd
from socksd.test.test_faults import RawDestination, resetWhenDelivered

#: What the web server sends before it resets.
BODY = os.urandom(1 << 20)

#: curl's exit code for "failure when receiving data from the peer".
CURLE_RECV_ERROR = 56


class CurlResetTests(InteropTestCase):
    """
    curl agrees that the download was cut: exit 56 ("Recv failure:
    Connection reset by peer") after every byte the server sent, with both
    relays.  (Before socksd passed resets on, curl got a clean end and
    exited 0, the download looking complete.)
    """

    def setUp(self) -> None:
        super().setUp()
        self.curl = requireTool("curl")

    async def fetchFromResettingServer(self, splice: bool) -> tuple[bytes, bytes, int]:
        server = RawDestination(self)

        def serve() -> bool:
            connection = server.accept()
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(4096)
                if not chunk:
                    return False
                request += chunk
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: x/y\r\n\r\n" + BODY)
            return resetWhenDelivered(connection)

        serving = deferToThread(serve)
        socksPort = await startSocksd(self, splice=splice)
        result = await getProcessOutputAndValue(
            self.curl,
            [
                "--silent", "--show-error", "--max-time", "20", "--noproxy", "",
                "--socks5", f"127.0.0.1:{socksPort}",
                f"http://127.0.0.1:{server.port}/",
            ],
            env={},
            reactor=reactor,
        )
        self.assertTrue(await serving, "the server's bytes never reached socksd")
        return result

    async def test_splice(self) -> None:
        """
        The splice relay: curl sees the whole body, then the reset.
        """
        out, err, code = await self.fetchFromResettingServer(splice=True)
        self.assertEqual((code, out == BODY), (CURLE_RECV_ERROR, True), err)
        self.assertIn(b"reset", err.lower())

    async def test_ordinaryRelay(self) -> None:
        """
        The ordinary relay: the same.
        """
        out, err, code = await self.fetchFromResettingServer(splice=False)
        self.assertEqual((code, out == BODY), (CURLE_RECV_ERROR, True), err)
        self.assertIn(b"reset", err.lower())
