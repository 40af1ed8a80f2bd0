"""
Helpers for tests that run C{twistd socksd} as a process and talk to it
with plain blocking sockets: the process, echo servers in threads, and a
few SOCKS5 client steps.  Everything is on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

import socksd

#: The checkout, so that twistd finds socksd's plugin.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(socksd.__file__)))
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
#: The longest any one wait may take.
WAIT = 30.0
#: A worker that serves (see L{Twistd.start}).
WORKER_READY = re.compile(
    r"worker (\d+) \(pid (\d+)\): \[log_legacy\] SocksServerFactory starting"
)


def freePort() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def waitFor(what: Callable[[], Any], message: Callable[[], str], timeout: float = WAIT) -> Any:
    """
    Call C{what} until it returns something true, and return that.

    @raise AssertionError: (with C{message()}) it did not within C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = what()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.05)


class Twistd:
    """
    One C{twistd -n socksd} process with its log in a file; killed (its
    whole process group) by the test's cleanup if it is still running.
    """

    def __init__(
        self,
        testCase: Any,
        arguments: Sequence[str],
        twistdArguments: Sequence[str] = (),
        env: dict[str, str] | None = None,
        program: Sequence[str] = (),
    ) -> None:
        """
        @param arguments: socksd's options.
        @param twistdArguments: twistd's (before C{socksd}).
        @param env: more environment variables.
        @param program: a command to run twistd with (systemd-socket-activate).
        """
        self.logPath = testCase.mktemp()
        self._log = open(self.logPath, "w+")
        testCase.addCleanup(self._log.close)
        command = [
            *program,
            TWISTD,
            "-n",
            "--pidfile=",
            *twistdArguments,
            "socksd",
            *arguments,
        ]
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=CHECKOUT, **(env or {})),
            cwd=CHECKOUT,
            start_new_session=True,
        )
        testCase.addCleanup(self.kill)

    def kill(self) -> None:
        """Kill the process group, if it still runs."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def log(self) -> str:
        """The log so far."""
        with open(self.logPath) as reader:
            return reader.read()

    def waitForLog(self, pattern: str | re.Pattern[str], count: int = 1) -> None:
        """Wait until C{pattern} matches C{count} times in the log."""
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> bool:
            if self.process.poll() is not None and len(compiled.findall(self.log())) < count:
                raise AssertionError(f"twistd exited:\n{self.log()}")
            return len(compiled.findall(self.log())) >= count

        waitFor(found, lambda: f"no {compiled.pattern!r} in the log:\n{self.log()}")

    def waitForListening(self, workers: int = 0) -> None:
        """Wait until socksd (or each of C{workers} workers) serves."""
        if workers:
            self.waitForLog(WORKER_READY, workers)
        else:
            self.waitForLog(r"SocksServerFactory starting on")

    def signal(self, number: int) -> None:
        """Send signal C{number} to twistd."""
        self.process.send_signal(number)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for twistd to exit; its status."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"twistd did not exit:\n{self.log()}") from None


class EchoServer:
    """A TCP echo server in a thread (one thread per connection)."""

    def __init__(self, testCase: Any) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        testCase.addCleanup(self.listener.close)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    @staticmethod
    def _echo(connection: socket.socket) -> None:
        with connection:
            try:
                while data := connection.recv(65536):
                    connection.sendall(data)
            except OSError:
                pass


class UdpEchoServer:
    """A UDP echo server in a thread."""

    def __init__(self, testCase: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        threading.Thread(target=self._echo, daemon=True).start()
        testCase.addCleanup(self.socket.close)

    def _echo(self) -> None:
        while True:
            try:
                data, peer = self.socket.recvfrom(65536)
                self.socket.sendto(data, peer)
            except OSError:
                return


def recvExactly(sock: socket.socket, count: int) -> bytes:
    """Read exactly C{count} bytes (fewer only at EOF)."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def socks5Address(host: str, port: int) -> bytes:
    """SOCKS5's ATYP, address and port for C{host} (IPv4 or a name)."""
    try:
        packed = socket.inet_aton(host)
    except OSError:
        name = host.encode("ascii")
        return bytes([3, len(name)]) + name + port.to_bytes(2, "big")
    return b"\x01" + packed + port.to_bytes(2, "big")


def socks5(
    port: int,
    host: str,
    destinationPort: int,
    command: int = 1,
    credentials: tuple[bytes, bytes] | None = None,
) -> tuple[socket.socket, int, bytes]:
    """
    A SOCKS5 request through socksd on C{port}.

    @return: the socket, the reply code (0xFF for a refused login or
        method) and the reply's bound address bytes (ATYP onwards).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    method = 2 if credentials else 0
    sock.sendall(bytes([5, 1, method]))
    selected = recvExactly(sock, 2)
    if selected != bytes([5, method]):
        return sock, 0xFF, b""
    if credentials:
        user, password = credentials
        sock.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        status = recvExactly(sock, 2)
        if status != b"\x01\x00":
            return sock, 0xFF, b""
    sock.sendall(bytes([5, command, 0]) + socks5Address(host, destinationPort))
    head = recvExactly(sock, 4)
    if len(head) < 4:
        return sock, 0xFF, b""
    kind = head[3]
    length = {1: 4, 4: 16}.get(kind)
    if length is None:
        length = recvExactly(sock, 1)[0]
        bound = bytes([kind, length]) + recvExactly(sock, length + 2)
    else:
        bound = bytes([kind]) + recvExactly(sock, length + 2)
    return sock, head[1], bound


def echoed(sock: socket.socket, data: bytes) -> bytes:
    """Send C{data} and read as many bytes back."""
    sock.sendall(data)
    return recvExactly(sock, len(data))


def refused(port: int) -> bool:
    """A new connection to C{port} on 127.0.0.1 is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def httpGet(port: int, path: str) -> tuple[int, bytes]:
    """GET C{path} from 127.0.0.1:C{port}: the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as web:
        web.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode("ascii"))
        response = b""
        while chunk := web.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
