"""
Socket activation: C{systemd-socket-activate} (Debian's systemd package)
holds the listening socket and starts C{twistd socksd --listen
systemd:domain=INET:name=socksd} on the first connection, as a systemd
socket unit would; a real curl fetches a page through it, with one process
and with C{--workers 2} (the parent hands the inherited socket to its
workers).
"""

from __future__ import annotations

import http.server
import signal
import subprocess
import threading
from typing import Any

from socksd.test._processes import Twistd, freePort
from socksd.test.interop import InteropTestCase, requireTool

PAGE = b"served through a socket-activated socksd\n" * 50


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


class SocketActivationTests(InteropTestCase):
    """
    socksd under C{systemd-socket-activate}, with curl.
    """

    def setUp(self) -> None:
        super().setUp()
        self.activate = requireTool("systemd-socket-activate")
        self.curl = requireTool("curl")
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        self.addCleanup(web.server_close)
        self.addCleanup(web.shutdown)
        self.webPort = web.server_address[1]

    def fetch(self, port: int) -> bytes:
        result = subprocess.run(
            [
                self.curl, "--silent", "--show-error", "--max-time", "30",
                "--noproxy", "", "--socks5-hostname", f"127.0.0.1:{port}",
                f"http://127.0.0.1:{self.webPort}/page",
            ],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        return result.stdout

    def activated(self, *options: str) -> tuple[Twistd, int]:
        """
        Start socksd behind C{systemd-socket-activate} (which starts it on
        the first connection); wait until the socket listens.
        """
        port = freePort()
        server = Twistd(
            self,
            ["--listen", "systemd:domain=INET:name=socksd", *options],
            program=[
                self.activate,
                "--listen", f"127.0.0.1:{port}",
                "--fdname=socksd",
                "--setenv=PYTHONPATH",
            ],
        )
        server.waitForLog(rf"Listening on 127\.0\.0\.1:{port}")
        return server, port

    def stop(self, server: Twistd) -> None:
        server.signal(signal.SIGTERM)
        self.assertIn(server.wait(), (0, -signal.SIGTERM), server.log())
        self.assertIn("Server Shut Down", server.log())

    def test_curl(self) -> None:
        """
        The first connection starts socksd, which serves it (it waited in
        the inherited socket's backlog) and the next ones.  The open-proxy
        guard judges the inherited socket by its address (127.0.0.1): no
        --allow-open-proxy is needed.
        """
        server, port = self.activated()
        self.assertEqual(self.fetch(port), PAGE)
        self.assertEqual(self.fetch(port), PAGE)
        self.assertIn("SocksServerFactory starting on", server.log())
        self.stop(server)

    def test_curlWithWorkers(self) -> None:
        """
        With C{--workers 2}, the parent adopts the socket systemd passed
        and both workers accept on it (each told the address the socket is
        bound to, for its own open-proxy guard).
        """
        server, port = self.activated("--workers", "2")
        for _ in range(4):
            self.assertEqual(self.fetch(port), PAGE)
        server.waitForListening(2)
        self.assertIn("for 2 workers", server.log())
        self.stop(server)
        self.assertNotIn("Traceback", server.log())
