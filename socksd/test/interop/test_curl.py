"""
curl, through socksd, fetches a page from a local twisted.web server with
every SOCKS flavour it speaks.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import PAGE, TEST_NAME, startSocksd, startWeb


class CurlTests(InteropTestCase):
    """
    curl agrees with socksd on SOCKS4, SOCKS4A, SOCKS5 and SOCKS5 with
    remote name resolution.
    """

    def setUp(self) -> None:
        super().setUp()
        self.curl = requireTool("curl")

    async def fetch(self, proxyFlag: str, host: str) -> tuple[bytes, bytes, int]:
        webPort = await startWeb(self)
        socksPort = await startSocksd(self)
        return await self._curl(proxyFlag, host, webPort, socksPort)

    async def _curl(self, proxyFlag, host, webPort, socksPort):
        return await getProcessOutputAndValue(
            self.curl,
            [
                "--silent", "--show-error", "--max-time", "20", "--noproxy", "",
                proxyFlag, f"127.0.0.1:{socksPort}",
                f"http://{host}:{webPort}/page",
            ],
            env={},
            reactor=reactor,
        )

    async def test_socks4(self) -> None:
        """
        curl --socks4 (curl resolves; an IPv4 address on the wire).
        """
        out, err, code = await self.fetch("--socks4", "127.0.0.1")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)

    async def test_socks4a(self) -> None:
        """
        curl --socks4a sends the name; socksd resolves it with its own
        resolver (the name is only in socksd's hosts file).
        """
        out, err, code = await self.fetch("--socks4a", TEST_NAME)
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)

    async def test_socks5(self) -> None:
        """
        curl --socks5 (curl resolves; an IPv4 address on the wire).
        """
        out, err, code = await self.fetch("--socks5", "127.0.0.1")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)

    async def test_socks5Hostname(self) -> None:
        """
        curl --socks5-hostname sends the name; socksd resolves it.
        """
        out, err, code = await self.fetch("--socks5-hostname", TEST_NAME)
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)

    async def test_socks5Refused(self) -> None:
        """
        A destination that refuses is a SOCKS failure curl reports, not a
        hang: curl exits 97 (proxy handshake error).
        """
        socksPort = await startSocksd(self)
        out, err, code = await getProcessOutputAndValue(
            self.curl,
            ["--silent", "--show-error", "--max-time", "20", "--socks5-hostname",
             f"127.0.0.1:{socksPort}", "http://127.0.0.1:1/"],
            env={},
            reactor=reactor,
        )
        self.assertEqual(code, 97, err)
        # curl names the SOCKS5 reply code: 5, connection refused.
        self.assertIn(b"(5)", err)
