"""
The C{twistd socksd} plugin is found after a plain C{pip install .}, and
C{twistd -n socksd} serves.

These tests install the source tree into a temporary directory (no
dependencies, no download when setuptools is at hand) and run C{twistd}
in a subprocess from a directory outside the checkout, so only the
installed copy can be found.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase


def sourceTree() -> Path | None:
    """
    Find the checkout: C{$SOCKSD_SOURCE} (tox sets it), else a parent of
    this file or of the working directory that holds socksd's setup.cfg.
    """
    candidates = []
    if os.environ.get("SOCKSD_SOURCE"):
        candidates.append(Path(os.environ["SOCKSD_SOURCE"]))
    for start in (Path(__file__).resolve(), Path.cwd()):
        candidates.extend(start.parents)
    for candidate in candidates:
        setup = candidate / "setup.cfg"
        if setup.is_file() and "name = socksd" in setup.read_text():
            return candidate
    return None


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class InstalledPluginTests(TestCase):
    """
    The plugin works from an installed copy, not only from a checkout.
    """

    def setUp(self) -> None:
        source = sourceTree()
        if source is None:
            raise SkipTest("needs socksd's source tree (set SOCKSD_SOURCE)")
        self.target = Path(self.mktemp()).resolve()
        command = [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--target", str(self.target), str(source),
        ]
        if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"):
            command.insert(4, "--no-build-isolation")
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue((self.target / "twisted" / "plugins" / "socksd_plugin.py").exists())
        self.assertFalse((self.target / "twisted" / "plugins" / "__init__.py").exists())
        self.environ = dict(os.environ, PYTHONPATH=str(self.target))
        self.cwd = self.target.parent

    def twistd(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *argv],
            env=self.environ,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **kwargs,
        )

    def test_help(self) -> None:
        """
        C{twistd socksd --help} lists socksd's options.
        """
        process = self.twistd("socksd", "--help")
        output, _ = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 0, output)
        for option in ("--listen", "--auth", "--resolver", "--upstream"):
            self.assertIn(option, output)

    def test_serves(self) -> None:
        """
        C{twistd -n socksd --listen tcp:PORT:interface=127.0.0.1} answers a
        SOCKS5 greeting.
        """
        port = freePort()
        process = self.twistd(
            "-n", "--pidfile=", "socksd", "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client = socket.create_connection(("127.0.0.1", port), timeout=5)
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        output = process.stdout.read() if process.poll() is not None else ""
                        self.fail(f"twistd did not start serving: {output}")
                    time.sleep(0.1)
            with client:
                client.sendall(bytes.fromhex("05 01 00"))
                self.assertEqual(client.recv(2), bytes.fromhex("05 00"))
        finally:
            process.terminate()
            process.communicate(timeout=30)
