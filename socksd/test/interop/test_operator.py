"""
What an operator meets, against real tools: an htpasswd file made by
Apache's own C{htpasswd} with curl logging in; upstream URLs through
microsocks and Dante (and curl through the chain); and C{twistd socksd}
and the C{socksd} command from a fresh editable install (C{pip install
-e}).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.utils import getProcessOutputAndValue

from socksd.test.interop import InteropTestCase, requireTool
from socksd.test.interop._support import PAGE, startWeb
from socksd.test.interop import test_client_peers as peers
from socksd.test.interop.test_client_peers import Echo, freePort, roundTrip


async def socksdFromOptions(testCase: InteropTestCase, *argv: str) -> int:
    """
    A socksd built from C{twistd socksd}'s options (as makeService builds
    it), listening on 127.0.0.1; return its port.
    """
    from socksd.server import SocksServerFactory
    from socksd.service.build import _parts
    from socksd.service.options import Options

    options = Options()
    options.parseOptions(list(argv))
    parts = _parts(options, reactor)
    if parts["authenticator"] is not None:
        parts["authenticator"].failureDelay = 0
    factory = SocksServerFactory(reactor, **parts)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    testCase.addCleanup(port.stopListening)
    return port.getHost().port


async def curl(proxy: str, url: str) -> tuple[bytes, bytes, int]:
    return await getProcessOutputAndValue(
        requireTool("curl"),
        ["--silent", "--show-error", "--max-time", "20", "--noproxy", "", "-x", proxy, url],
        env={},
        reactor=reactor,
    )


class HtpasswdCurlTests(InteropTestCase):
    """
    An htpasswd -B file made by Apache's htpasswd; curl logs in through
    socksd with it.
    """

    timeout = 60

    async def test_bcryptLogin(self) -> None:
        """
        curl with the right password (percent-encoded in its proxy URL)
        gets the page; with a wrong one, socksd refuses it.
        """
        htpasswd = requireTool("htpasswd")
        path = Path(self.mktemp())
        password = "p@ss:wörd"
        subprocess.run(
            [htpasswd, "-cbB", "-C", "5", str(path), "alice", password],
            check=True,
            capture_output=True,
        )
        self.assertTrue(path.read_text().startswith("alice:$2y$05$"))
        webPort = await startWeb(self)
        port = await socksdFromOptions(self, "--auth", f"htpasswd:{path}")
        out, err, code = await curl(
            f"socks5h://alice:p%40ss%3Aw%C3%B6rd@127.0.0.1:{port}",
            f"http://127.0.0.1:{webPort}/page",
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)
        out, err, code = await curl(
            f"socks5h://alice:wrong@127.0.0.1:{port}", f"http://127.0.0.1:{webPort}/page"
        )
        self.assertNotEqual(code, 0)
        self.assertEqual(out, b"")

    async def test_sha512Login(self) -> None:
        """
        An htpasswd -5 (SHA-512-crypt) line logs in too.
        """
        htpasswd = requireTool("htpasswd")
        path = Path(self.mktemp())
        subprocess.run(
            [htpasswd, "-cb5", str(path), "bob", "s3cret"], check=True, capture_output=True
        )
        webPort = await startWeb(self)
        port = await socksdFromOptions(self, "--auth", f"htpasswd:{path}")
        out, err, code = await curl(
            f"socks5h://bob:s3cret@127.0.0.1:{port}", f"http://127.0.0.1:{webPort}/page"
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)


class UpstreamURLTests(InteropTestCase):
    """
    URL upstreams against servers no one here wrote: microsocks (SOCKS5,
    with and without a password) and Dante (SOCKS4 and SOCKS5).
    """

    timeout = 60

    async def test_microsocks(self) -> None:
        """
        socks5h:// and socks5:// (with percent-encoded credentials) through
        microsocks, as an application's endpoint and as a front socksd's
        upstream that curl uses.
        """
        from socksd.upstream.urls import endpointFromURL

        echoPort = await self._listen(Factory.forProtocol(Echo))
        plain = await peers.MicrosocksTests.startMicrosocks(self)  # type: ignore[arg-type]
        locked = await peers.MicrosocksTests.startMicrosocks(self, "-u", "alice", "-P", "p@ss")  # type: ignore[arg-type]
        for url in (
            f"socks5h://127.0.0.1:{plain}",
            f"socks5://127.0.0.1:{plain}",
            f"socks5h://alice:p%40ss@127.0.0.1:{locked}",
        ):
            await roundTrip(self, endpointFromURL(reactor, url, "localhost", echoPort))
        webPort = await startWeb(self)
        front = await socksdFromOptions(
            self, "--upstream", f"socks5h://alice:p%40ss@127.0.0.1:{locked}"
        )
        out, err, code = await curl(
            f"socks5h://127.0.0.1:{front}", f"http://127.0.0.1:{webPort}/page"
        )
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, PAGE)

    async def test_dante(self) -> None:
        """
        socks4:// (the name resolved here, plain SOCKS4 on the wire),
        socks5h:// and socks5:// through Dante.
        """
        from socksd.upstream.urls import endpointFromURL

        echoPort = await self._listen(Factory.forProtocol(Echo))
        dante = await peers.DanteTests.startDante(self)  # type: ignore[arg-type]
        for url, host in (
            (f"socks4://127.0.0.1:{dante}", "localhost"),
            (f"socks4://nobody@127.0.0.1:{dante}", "127.0.0.1"),
            (f"socks5h://127.0.0.1:{dante}", "127.0.0.1"),
            (f"socks5://127.0.0.1:{dante}", "localhost"),
        ):
            await roundTrip(self, endpointFromURL(reactor, url, host, echoPort))

    async def _listen(self, factory: Any) -> int:
        from socksd.test.interop._support import listen

        return await listen(self, factory)


class EditableInstallTests(InteropTestCase):
    """
    After C{pip install -e .} into a fresh virtual environment, C{twistd
    socksd} finds the plugin, the endpoint string parsers and the
    htpasswd checker, and the C{socksd} command runs.
    """

    timeout = 300

    def setUp(self) -> None:
        super().setUp()
        from socksd.test.test_plugin import sourceTree

        source = sourceTree()
        if source is None:
            self.skipTest("needs socksd's source tree (set SOCKSD_SOURCE)")
        base = Path(self.mktemp()).resolve()
        base.mkdir()
        # A copy of the checkout: an editable install writes its metadata
        # next to the sources.
        self.source = base / "src"
        self.source.mkdir()
        for name in ("socksd", "twisted", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
            original = source / name
            if original.is_dir():
                shutil.copytree(
                    original,
                    self.source / name,
                    ignore=shutil.ignore_patterns("_trial_temp*", "__pycache__", "dropin.cache"),
                )
            else:
                shutil.copy(original, self.source / name)
        self.venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.python = str(self.venv / "bin" / "python")
        # The fresh environment sees this one's packages (Twisted and the
        # rest) through a .pth file, as installed dependencies.
        site = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        outer = [p for p in sys.path if p.endswith("site-packages")]
        Path(site, "_outer.pth").write_text("\n".join(outer) + "\n")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", self.python, "install",
             "--quiet", "--no-deps", "-e", str(self.source)],
            capture_output=True, text=True, timeout=240,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run_(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=60,
            env=self.environ, cwd=str(self.venv),
        )

    def twistd(self, *argv: str) -> subprocess.CompletedProcess:
        return self.run_(
            self.python, "-c", "from twisted.scripts.twistd import run; run()", *argv
        )

    def test_plugins(self) -> None:
        """
        C{twistd socksd --help} and C{--version}, C{--help-auth} naming
        htpasswd, a socks5: endpoint string, and the console script, all
        from the editable install (edits to the source show at once).
        """
        result = self.twistd("socksd", "--help")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("--listen", result.stdout)
        result = self.twistd("socksd", "--help-auth")
        self.assertIn("htpasswd", result.stdout)
        result = self.run_(
            self.python, "-c",
            "import socksd; from twisted.internet import reactor;"
            "from twisted.internet.endpoints import clientFromString;"
            "print(socksd.__file__);"
            "print(clientFromString(reactor, 'socks5:example.com:80'))",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(str(self.source), result.stdout)
        self.assertIn("SOCKS5ClientEndpoint", result.stdout)
        init = self.source / "socksd" / "__init__.py"
        init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9+edit.'))
        result = self.run_(str(self.venv / "bin" / "socksd"), "--version")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("socksd 9.9.9+edit.", result.stdout)
        result = self.twistd("socksd", "--version")
        self.assertIn("socksd 9.9.9+edit.", result.stdout)

    def test_serves(self) -> None:
        """
        C{twistd -n socksd} from the editable install answers a SOCKS5
        greeting.
        """
        import socket
        import time

        port = freePort()
        process = subprocess.Popen(
            [self.python, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "socksd", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            env=self.environ, cwd=str(self.venv),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        self.fail(f"twistd did not serve: {process.stdout.read()}")
                    time.sleep(0.1)
            with client:
                client.sendall(bytes.fromhex("05 01 00"))
                self.assertEqual(client.recv(2), bytes.fromhex("05 00"))
        finally:
            process.terminate()
            process.communicate(timeout=30)
