"""
socksd behind a real HAProxy, as docs/deployment.rst sets it up: PROXY
protocol v2 to a C{haproxy:} listener (socksd sees and logs the real
client), health checks on C{/healthz}, the agent check; on SIGTERM HAProxy
stops sending new connections while the tunnel it carries goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from socksd.test._processes import (
    EchoServer,
    Twistd,
    echoed,
    freePort,
    socks5,
    waitFor,
)
from socksd.test.interop import InteropTestCase, requireTool

CONFIG = """\
global
    stats socket {stats} mode 600 level admin
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend socks
    bind 127.0.0.1:{front}
    default_backend socksd
backend socksd
    option httpchk
    http-check send meth GET uri /healthz
    server socksd1 127.0.0.1:{socks} send-proxy-v2 check port {metrics} inter 300ms fall 1 rise 1 agent-check agent-port {agent} agent-inter 300ms
"""


class HAProxyTests(InteropTestCase):
    """
    HAProxy in front of socksd.
    """

    def setUp(self) -> None:
        super().setUp()
        self.haproxy = requireTool("haproxy")

    def status(self, stats: str) -> str:
        """The server's status in HAProxy's C{show stat}."""
        with socket.socket(socket.AF_UNIX) as control:
            control.settimeout(5)
            control.connect(stats)
            control.sendall(b"show stat\n")
            data = b""
            while chunk := control.recv(65536):
                data += chunk
        for line in data.decode().splitlines():
            fields = line.split(",")
            if fields[:2] == ["socksd", "socksd1"]:
                return fields[17]
        return ""

    def test_proxyProtocolAndDrain(self) -> None:
        """
        A tunnel through HAProxy reaches socksd with the client's own
        address (PROXY protocol v2, in the access record); after SIGTERM,
        HAProxy sees the drain (agent check, /healthz) and sends no new
        connection, while the open tunnel keeps echoing until it closes.
        """
        echo = EchoServer(self)
        front, port, metricsPort, agentPort = (freePort() for _ in range(4))
        # Short: the stats socket's path must fit a UNIX address.
        directory = tempfile.mkdtemp(prefix="hap")
        self.addCleanup(shutil.rmtree, directory)
        accessLog = os.path.join(directory, "access.log")
        server = Twistd(
            self,
            [
                "--listen", f"haproxy:tcp:{port}:interface=127.0.0.1",
                "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1",
                "--agent-check", f"tcp:{agentPort}:interface=127.0.0.1",
                "--access-log", accessLog,
                "--drain-timeout", "60",
            ],
        )
        server.waitForLog("MetricsSite starting on")
        stats = os.path.join(directory, "stats.sock")
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as writer:
            writer.write(
                CONFIG.format(
                    stats=stats, front=front, socks=port, metrics=metricsPort,
                    agent=agentPort,
                )
            )
        haproxy = subprocess.Popen(
            [self.haproxy, "-f", config, "-db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(haproxy.wait, 10)
        self.addCleanup(haproxy.kill)
        waitFor(lambda: os.path.exists(stats) and self.status(stats) == "UP", server.log)

        sock, code, _ = socks5(front, "127.0.0.1", echo.port)
        self.addCleanup(sock.close)
        self.assertEqual(code, 0)
        self.assertEqual(echoed(sock, b"through haproxy"), b"through haproxy")
        clientPort = sock.getsockname()[1]

        server.signal(signal.SIGTERM)
        waitFor(lambda: self.status(stats).startswith(("DRAIN", "DOWN")), server.log)
        # No new tunnel goes to the draining server...
        refused, code, _ = socks5(front, "127.0.0.1", echo.port)
        refused.close()
        self.assertEqual(code, 0xFF)
        # ... while the open one goes on.
        time.sleep(0.5)
        self.assertEqual(echoed(sock, b"still here"), b"still here")
        sock.close()
        server.wait()
        with open(accessLog, "rb") as reader:
            [record] = [json.loads(line) for line in reader]
        self.assertEqual(record["client"], f"127.0.0.1:{clientPort}")
        self.assertEqual(record["bytesUp"], len(b"through haproxystill here"))
        self.assertIn("1 connections ended, 0 cut", server.log())
