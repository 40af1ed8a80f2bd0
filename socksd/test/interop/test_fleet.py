"""
A fleet of socksd on a real Redis (Debian's redis-server) and behind a
real HAProxy: shared connection caps, bandwidth, volume quotas and SOCKS6
sessions, across two instances (C{twistd -n socksd} processes) and across
C{--workers 2}; Redis stopped mid-run; the local quota file.

Each test starts its own redis-server (and haproxy) on 127.0.0.1 and free
ports, in a temporary directory, and stops them.  Clients are plain
sockets (SOCKS5) and socksd's own SOCKS6 endpoint; destinations are small
threaded servers in the test process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest

import socksd
from socksd.test.interop import InteropTestCase, requireTool

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
#: The longest any one wait may take, in seconds.
WAIT = 20.0


def freePort() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def waitForPort(port: int, process: subprocess.Popen, log: Any) -> None:
    """Wait until something accepts on C{port}, or fail with C{log()}."""
    deadline = time.monotonic() + WAIT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {log()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {port}: {log()}")
            time.sleep(0.05)


class Processes:
    """Processes a test starts, each in its own group, killed by its cleanup."""

    def __init__(self, testCase: InteropTestCase) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="socksd-fleet-"))
        self._processes: list[subprocess.Popen] = []
        testCase.addCleanup(self.stopAll)

    def start(self, name: str, argv: list[str], **kwargs: Any) -> tuple[subprocess.Popen, Any]:
        logPath = self.directory / f"{name}-{len(self._processes)}.log"
        out = open(logPath, "wb")
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.directory,
            **kwargs,
        )
        out.close()
        self._processes.append(process)

        def log() -> str:
            return logPath.read_text(errors="replace")

        return process, log

    def stop(self, process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def stopAll(self) -> None:
        for process in self._processes:
            self.stop(process, signal.SIGKILL)


class Redis:
    """A redis-server of one test, on a free port; C{stop()} and C{start()} again."""

    def __init__(self, processes: Processes) -> None:
        self.path = requireTool("redis-server")
        try:
            import txredisapi  # noqa: F401
        except ImportError:
            raise SkipTest("txredisapi is not installed (pip install 'socksd[redis]')")
        self.processes = processes
        self.port = freePort()
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process, log = self.processes.start(
            "redis",
            [
                self.path,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.processes.directory),
            ],
        )  # fmt: skip
        waitForPort(self.port, self.process, log)

    def stop(self) -> None:
        assert self.process is not None
        self.processes.stop(self.process, signal.SIGKILL)

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server."""
        return subprocess.run(
            [requireTool("redis-cli"), "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout


class Socksd:
    """One C{twistd -n socksd} process of a test."""

    def __init__(self, processes: Processes, args: list[str], listen: str | None = None) -> None:
        self.processes = processes
        self.port = freePort()
        self.args = args
        self.listen = listen or f"tcp:{self.port}:interface=127.0.0.1"
        self.start()

    def start(self) -> None:
        self.process, self.log = self.processes.start(
            "socksd",
            [TWISTD, "-n", "--pidfile=", "socksd", "--listen", self.listen, *self.args],
            env=dict(os.environ, PYTHONPATH=CHECKOUT),
        )
        waitForPort(self.port, self.process, self.log)
        deadline = time.monotonic() + WAIT
        if any(arg.startswith("--shared-state") for arg in self.args):
            while "shared state: connected" not in self.log():
                assert time.monotonic() < deadline, self.log()
                time.sleep(0.05)

    def stop(self) -> None:
        self.processes.stop(self.process)


class Sink(socketserver.ThreadingTCPServer):
    """
    A destination: C{SEND n} makes it send n bytes; otherwise it keeps the
    connection open and reads.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _SinkHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        try:
            while not data.endswith(b"\n"):
                chunk = self.request.recv(64)
                if not chunk:
                    return
                data += chunk
            words = data.split()
            if words[:1] == [b"SEND"]:
                left = int(words[1])
                block = b"x" * 65536
                while left > 0:
                    self.request.sendall(block[: min(left, len(block))])
                    left -= min(left, len(block))
            while self.request.recv(65536):
                pass
        except OSError:
            pass


def socks5(port: int, destination: int, user: str | None = None, password: str = "pw") -> tuple[socket.socket | None, int]:
    """
    A SOCKS5 CONNECT through 127.0.0.1:C{port} to 127.0.0.1:C{destination}.

    @return: the open socket (or L{None} once refused) and the reply code.
    """
    client = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    if user is None:
        client.sendall(bytes.fromhex("050100"))
        if client.recv(2) != bytes.fromhex("0500"):
            # Closed at once: a process's own cap, counted from connect.
            client.close()
            return None, -1
    else:
        client.sendall(bytes.fromhex("050102"))
        assert client.recv(2) == bytes.fromhex("0502")
        name, secret = user.encode(), password.encode()
        client.sendall(bytes([1, len(name)]) + name + bytes([len(secret)]) + secret)
        assert client.recv(2) == bytes.fromhex("0100")
    client.sendall(bytes.fromhex("05010001 7f000001") + destination.to_bytes(2, "big"))
    reply = b""
    while len(reply) < 10:
        chunk = client.recv(10 - len(reply))
        if not chunk:
            break
        reply += chunk
    code = reply[1] if len(reply) > 1 else -1
    if code != 0:
        client.close()
        return None, code
    return client, code


def receiveAll(client: socket.socket, limit: float = WAIT) -> int:
    """Read until the connection ends; the bytes received."""
    total = 0
    client.settimeout(limit)
    try:
        while chunk := client.recv(65536):
            total += len(chunk)
    except OSError:
        pass
    return total


def eventually(check: Any, seconds: float = WAIT) -> Any:
    """Call C{check()} until it returns something true, for at most C{seconds}."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


AUTH = ["--auth", "memory:alice:pw:bob:pw", "--prefer-no-auth"]


class FleetCapsTests(InteropTestCase):
    """
    C{--max-connections-per-user} and C{--max-connections-per-client} hold
    across instances and workers.
    """

    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        self.processes = Processes(self)
        self.redis = Redis(self.processes)
        self.sink = Sink()
        self.addCleanup(self.sink.close)

    def test_userCapAcrossInstances(self) -> None:
        """
        With C{--max-connections-per-user 2} on two instances sharing
        Redis, alice holds one tunnel through each; her third, through
        either, is refused (01); bob is not affected; once alice closes
        one, she may open another.
        """
        args = ["--shared-state", self.redis.url, "--max-connections-per-user", "2", *AUTH]
        a, b = Socksd(self.processes, args), Socksd(self.processes, args)
        first, code = socks5(a.port, self.sink.port, "alice")
        self.assertEqual(code, 0)
        second, code = socks5(b.port, self.sink.port, "alice")
        self.assertEqual(code, 0)
        for port in (a.port, b.port):
            refused, code = socks5(port, self.sink.port, "alice")
            self.assertEqual(code, 1)
        bob, code = socks5(b.port, self.sink.port, "bob")
        self.assertEqual(code, 0)
        self.assertIn("too many connections for this user (fleet-wide cap 2)", a.log() + b.log())
        first.shutdown(socket.SHUT_RDWR)
        first.close()

        def again() -> Any:
            client, code = socks5(b.port, self.sink.port, "alice")
            return client
        again_ = eventually(again)
        for client in (second, bob, again_):
            client.close()

    def test_clientCapAcrossWorkers(self) -> None:
        """
        With C{--workers 2} and C{--max-connections-per-client 2}, the
        client holds two tunnels, and every further one is refused,
        whichever worker the kernel gives it to.
        """
        args = ["--workers", "2", "--shared-state", self.redis.url, "--max-connections-per-client", "2"]
        server = Socksd(self.processes, args)
        eventually(lambda: len(set(re.findall(r"worker (\d+) \(pid \d+\): .*shared state: connected", server.log()))) == 2)
        held = []
        for _ in range(2):
            client, code = socks5(server.port, self.sink.port)
            self.assertEqual(code, 0)
            held.append(client)
        refusals = set()
        for _ in range(12):
            client, code = socks5(server.port, self.sink.port)
            # 01 from the fleet's cap; closed at once (-1) by a worker that
            # holds both tunnels itself (its own cap counts from connect).
            self.assertIn(code, (1, -1), server.log())
            refusals.add(code)
        self.assertIn(1, refusals)
        served = set(re.findall(r"worker (\d+) \(pid \d+\): \[socksd\.connection\]", server.log()))
        self.assertEqual(served, {"1", "2"}, server.log())
        for client in held:
            client.close()

    def test_crashedInstanceExpires(self) -> None:
        """
        The tunnels of an instance that is killed stop counting within
        the heartbeat's 15 seconds.
        """
        args = ["--shared-state", self.redis.url, "--max-connections-per-user", "1", *AUTH]
        a, b = Socksd(self.processes, args), Socksd(self.processes, args)
        held, code = socks5(a.port, self.sink.port, "alice")
        self.assertEqual(code, 0)
        self.assertEqual(socks5(b.port, self.sink.port, "alice")[1], 1)
        self.processes.stop(a.process, signal.SIGKILL)
        held.close()
        began = time.monotonic()
        client = eventually(lambda: socks5(b.port, self.sink.port, "alice")[0], 30)
        self.assertLess(time.monotonic() - began, 16.5)
        client.close()


class FleetQuotaTests(InteropTestCase):
    """
    C{--quota-per-user} holds across instances and restarts, in Redis or
    in the local quota file.
    """

    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        self.processes = Processes(self)
        self.sink = Sink()
        self.addCleanup(self.sink.close)

    def download(self, port: int, user: str, size: int) -> tuple[int, int]:
        """Ask the sink for C{size} bytes through the proxy: (reply, bytes got)."""
        client, code = socks5(port, self.sink.port, user)
        if client is None:
            return code, 0
        client.sendall(f"SEND {size}\n".encode())
        got = 0
        client.settimeout(WAIT)
        try:
            while got < size:
                chunk = client.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass
        client.close()
        return code, got

    def checkQuota(self, start: Any, restart: Any) -> None:
        # 200k/day: the first 150 kB pass; the next 150 kB tunnel is cut
        # within one read (64 KiB) of the quota; then alice is refused (02),
        # after a restart too; bob is not affected.
        first, second = start()
        code, got = self.download(first.port, "alice", 150_000)
        self.assertEqual((code, got), (0, 150_000))
        code, got = self.download(second.port, "alice", 150_000)
        self.assertEqual(code, 0)
        self.assertGreaterEqual(got, 200_000 - 150_000 - 65536)
        self.assertLess(got, 150_000)
        self.assertLessEqual(150_000 + got, 200_000 + 65536)
        for server in {first, second}:
            self.assertEqual(self.download(server.port, "alice", 10)[0], 2)
        self.assertEqual(self.download(second.port, "bob", 150_000), (0, 150_000))
        logs = first.log() + second.log()
        self.assertIn("quota exhausted: user/alice (200000/day)", logs)
        first, second = restart(first, second)
        self.assertEqual(self.download(first.port, "alice", 10)[0], 2)
        self.assertEqual(self.download(second.port, "bob", 10), (0, 10))

    def test_redisAcrossInstancesAndRestarts(self) -> None:
        """
        With Redis, a user's quota is spent through either of two
        instances and stays spent when both restart.
        """
        redis = Redis(self.processes)
        args = ["--shared-state", redis.url, "--quota-per-user", "200k/day", *AUTH]

        def start() -> tuple[Socksd, Socksd]:
            return Socksd(self.processes, args), Socksd(self.processes, args)

        def restart(a: Socksd, b: Socksd) -> tuple[Socksd, Socksd]:
            a.stop()
            b.stop()
            return start()

        self.checkQuota(start, restart)
        self.assertIn("user/alice", redis.cli("--raw", "hkeys", redis.cli("--raw", "keys", "socksd:quota:day:*").strip()))

    def test_localFileAcrossRestarts(self) -> None:
        """
        Without C{--shared-state}, the counts are kept in C{--quota-state}
        and survive a restart of the instance.
        """
        state = str(self.processes.directory / "quotas.json")
        args = ["--quota-per-user", "200k/day", "--quota-state", state, *AUTH]

        def start() -> tuple[Socksd, Socksd]:
            server = Socksd(self.processes, args)
            return server, server

        def restart(a: Socksd, b: Socksd) -> tuple[Socksd, Socksd]:
            a.stop()
            self.assertTrue(os.path.exists(state))
            return start()

        self.checkQuota(start, restart)


class FleetBandwidthTests(InteropTestCase):
    """
    C{--bandwidth-per-user} is shared by the instances' tunnels.
    """

    timeout = 120

    def test_sharedRate(self) -> None:
        """
        alice downloads through two instances at once for 3 seconds with
        C{--bandwidth-per-user 200k}: together her tunnels move about
        200 kB/s (within the documented bound: rate * T + burst + 2 leases
        + one read per direction), not twice that.
        """
        processes = Processes(self)
        redis = Redis(processes)
        sink = Sink()
        self.addCleanup(sink.close)
        args = ["--shared-state", redis.url, "--bandwidth-per-user", "200k", *AUTH]
        a, b = Socksd(processes, args), Socksd(processes, args)
        clients = []
        for server in (a, b):
            client, code = socks5(server.port, sink.port, "alice")
            self.assertEqual(code, 0)
            client.sendall(b"SEND 100000000\n")
            clients.append(client)
        totals = [0, 0]
        began = time.monotonic()
        seconds = 3.0
        while (elapsed := time.monotonic() - began) < seconds:
            for index, client in enumerate(clients):
                client.settimeout(max(0.01, seconds - elapsed))
                try:
                    totals[index] += len(client.recv(65536))
                except OSError:
                    pass
        elapsed = time.monotonic() - began
        for client in clients:
            client.close()
        rate, burst, lease, read = 200_000, 50_000, 16384, 65536
        bound = rate * elapsed + burst + 2 * lease + 2 * read
        self.assertLessEqual(sum(totals), bound, totals)
        self.assertGreater(sum(totals), 0.5 * rate * elapsed, totals)
        self.assertTrue(all(totals), totals)


class FleetSocks6Tests(InteropTestCase):
    """
    A SOCKS6 session and its token window work across instances.
    """

    timeout = 120

    async def test_sessionAndTokensAcrossInstances(self) -> None:
        """
        A session opened (with a window) through instance A serves a
        request through B without credentials; a token spent through B is
        rejected when replayed through A; the next token is accepted
        through A; a teardown through B ends the session for A.
        """
        from socksd.client.socks6 import (
            SessionInvalid,
            Socks6Session,
            SOCKS6ClientEndpoint,
            TokenRejected,
            socks6Noop,
            socks6Teardown,
        )

        processes = Processes(self)
        redis = Redis(processes)
        sink = Sink()
        self.addCleanup(sink.close)
        args = ["--shared-state", redis.url, "--auth", "memory:alice:pw"]
        a, b = Socksd(processes, args), Socksd(processes, args)
        proxyA = TCP4ClientEndpoint(reactor, "127.0.0.1", a.port, timeout=WAIT)
        proxyB = TCP4ClientEndpoint(reactor, "127.0.0.1", b.port, timeout=WAIT)
        session = Socks6Session(windowSize=8)
        await socks6Noop(proxyA, session, "alice", "pw")
        self.assertIsNotNone(session.sessionId)
        self.assertIsNotNone(session.window)

        async def connect(proxy: Any, **kwargs: Any) -> Any:
            endpoint = SOCKS6ClientEndpoint(
                proxy, "127.0.0.1", sink.port, session=session, **kwargs
            )
            protocol = await endpoint.connect(Factory.forProtocol(Protocol))
            protocol.transport.loseConnection()
            return protocol

        await connect(proxyB, spendToken=True)
        spent = session.lastToken
        with self.assertRaises(TokenRejected):
            await connect(proxyA, token=spent)
        # A rejected request leaves the session alive.
        session.valid = True
        await connect(proxyA, spendToken=True)
        self.assertNotEqual(session.lastToken, spent)
        await socks6Teardown(proxyB, session, "alice", "pw")
        session.valid = True
        with self.assertRaises(SessionInvalid):
            await connect(proxyA)
        self.assertIn("idempotence token", a.log())


class FleetFailureTests(InteropTestCase):
    """
    Redis stopped mid-run: C{--shared-state-failure open} and C{closed}.
    """

    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        self.processes = Processes(self)
        self.redis = Redis(self.processes)
        self.sink = Sink()
        self.addCleanup(self.sink.close)

    def timed(self, port: int, user: str = "alice") -> tuple[float, int, Any]:
        began = time.monotonic()
        client, code = socks5(port, self.sink.port, user)
        return time.monotonic() - began, code, client

    def checkFailure(self, mode: str, expected: int) -> None:
        args = [
            "--shared-state", self.redis.url,
            "--shared-state-failure", mode,
            "--max-connections-per-user", "5",
            *AUTH,
        ]  # fmt: skip
        server = Socksd(self.processes, args)
        seconds, code, client = self.timed(server.port)
        self.assertEqual(code, 0)
        client.close()
        self.redis.stop()
        eventually(lambda: "shared state: lost" in server.log(), 5)
        for _ in range(5):
            seconds, code, client = self.timed(server.port)
            self.assertEqual(code, expected, server.log())
            self.assertLess(seconds, 1.0)
            if client is not None:
                client.close()
        self.redis.start()
        eventually(lambda: server.log().count("shared state: connected") >= 2, 10)
        seconds, code, client = self.timed(server.port)
        self.assertEqual(code, 0)
        client.close()
        return server

    def test_open(self) -> None:
        """
        With C{open}, tunnels go on being served while Redis is down (each
        within a second), the loss and the return are logged, and the
        fleet's counts work again once Redis is back.
        """
        self.checkFailure("open", 0)

    def test_closed(self) -> None:
        """
        With C{closed}, new tunnels get a general failure (01) at once
        while Redis is down, and are served again once it is back.
        """
        server = self.checkFailure("closed", 1)
        self.assertIn("shared state unavailable", server.log())

    def test_hungRedis(self) -> None:
        """
        A Redis that stops answering (SIGSTOP) holds no request more than
        a second: the command's deadline drops the connection, and the
        failure policy applies.
        """
        args = [
            "--shared-state", self.redis.url,
            "--shared-state-failure", "closed",
            "--max-connections-per-user", "5",
            *AUTH,
        ]  # fmt: skip
        server = Socksd(self.processes, args)
        os.kill(self.redis.process.pid, signal.SIGSTOP)
        self.addCleanup(lambda: os.kill(self.redis.process.pid, signal.SIGCONT))
        seconds, code, client = self.timed(server.port)
        self.assertEqual(code, 1)
        self.assertLess(seconds, 1.5)
        seconds, code, client = self.timed(server.port)
        self.assertEqual(code, 1)
        self.assertLess(seconds, 1.0)
        os.kill(self.redis.process.pid, signal.SIGCONT)
        eventually(lambda: self.timed(server.port)[1] == 0, 10)


class FleetHAProxyTests(InteropTestCase):
    """
    Two instances behind a real HAProxy (mode tcp, round robin,
    send-proxy-v2 to their C{haproxy:} listeners).
    """

    timeout = 120

    def test_roundRobinKeepsTheCaps(self) -> None:
        """
        Both instances serve (each logs connections from the real client
        address, which HAProxy passed on), and the fleet-wide per-client
        cap of 3 holds through the balancer.
        """
        haproxy = requireTool("haproxy")
        processes = Processes(self)
        redis = Redis(processes)
        sink = Sink()
        self.addCleanup(sink.close)
        args = ["--shared-state", redis.url, "--max-connections-per-client", "3"]
        servers = []
        for _ in range(2):
            port = freePort()
            server = Socksd.__new__(Socksd)
            server.processes, server.port, server.args = processes, port, args
            server.listen = f"haproxy:tcp:{port}:interface=127.0.0.1"
            server.start()
            servers.append(server)
        front = freePort()
        config = processes.directory / "haproxy.cfg"
        config.write_text(
            "global\n  maxconn 256\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
            f"frontend socks\n  bind 127.0.0.1:{front}\n  default_backend fleet\n"
            "backend fleet\n  balance roundrobin\n"
            + "".join(
                f"  server s{i} 127.0.0.1:{s.port} send-proxy-v2 check\n"
                for i, s in enumerate(servers)
            )
        )
        process, log = processes.start("haproxy", [haproxy, "-db", "-f", str(config)])
        waitForPort(front, process, log)
        held = []
        for _ in range(3):
            client, code = socks5(front, sink.port)
            self.assertEqual(code, 0, log())
            held.append(client)
        for _ in range(4):
            self.assertEqual(socks5(front, sink.port)[1], 1)
        for server in servers:
            self.assertIn("[socksd.connection#info] 127.0.0.1:", server.log())
            self.assertIn("fleet-wide cap 3", "".join(s.log() for s in servers))
        for client in held:
            client.close()
