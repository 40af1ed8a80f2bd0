"""
A soak test for socksd: mixed traffic for a given time, with faults
injected on a schedule, every byte checked, and the servers' memory,
descriptors and tunnels per second reported over time.

    venv/bin/python benchmarks/soak.py --duration 600       # ten minutes
    venv/bin/python benchmarks/soak.py --quick              # one minute

It is not a unit test (it takes minutes and judges nothing by time): it
prints what it saw, and says what was lost.  Everything runs on 127.0.0.1
(and 127.0.0.2, loopback too), each process in its own process group,
killed at the end (also on an error or Ctrl-C); every wait is bounded.

The servers:

  - B{A}: C{twistd socksd --workers 2} with C{--rules} (reloaded on
    SIGHUP), C{--metrics}, and a route that sends destinations on
    127.0.0.2 through B (chained, with a username and password);
  - B{B}: C{twistd socksd --auth memory:soak:soak --socks4-with-auth},
    the upstream of A's route, and a server clients also use directly;
  - B{targets}: one process (C{soak.py targets}) serving, by a one-line
    header from the client (C{KIND SEED SIZE [HOST PORT]}): C{echo}
    (everything back, until EOF), C{down} (SIZE bytes of the stream
    SEED names, then a clean close), C{up} (reads to EOF, answers the
    sha256 and the count), C{reset} (SIZE bytes, then a reset: SO_LINGER
    0), C{hang} (says nothing, until the client leaves), C{bindpeer}
    (connects to HOST PORT, a BIND's address, and sends SIZE bytes); a UDP
    echo; and a "black hole" port whose connections never complete (a
    full accept queue).

The traffic (C{--load-processes} processes of C{--threads} threads, each
running one scenario after another, picked at random by weight; see
L{SCENARIOS}): SOCKS4, SOCKS5 and SOCKS6 CONNECTs, short echoes and bulk
downloads, uploads and echoes (up to 32 MiB), with and without
username/password, direct and chained; SOCKS4 and SOCKS5 BINDs; SOCKS5 UDP
ASSOCIATE; slow readers and clients that never read; destinations that
reset and that hang; BINDs and CONNECTs abandoned before their reply.
Every stream is generated from its seed on both ends and compared byte for
byte (uploads by their sha256).

The faults, every C{--period} seconds (60 by default), at fixed offsets:
SIGHUP to A with good rules (10 s), a worker of A killed with SIGKILL (25
s; the parent starts another), SIGHUP with a broken rules file (35 s; A
must keep its rules), then the good file again (40 s), and B killed with
SIGKILL and restarted 4 s later (45 s; "upstream death").

Each tunnel's outcome is one of: C{ok}; C{refused} (a failure reply),
C{noproxy} (the proxy's port refused), C{reset}, C{eof-short} (a clean
EOF before all the bytes: a transfer cut short that looks complete),
C{corrupt} (a byte differs), C{timeout}, C{error}.  An outcome other than
C{ok} while a fault hits the tunnel's path (A's worker killed: A and A-B;
B dead: B and A-B) is that fault's casualty; anywhere else, it is lost.
A destination's reset must reach the client as a reset: a clean EOF there
is lost.  C{corrupt} is lost everywhere.

Every C{--sample} seconds (5) it records A's and B's RSS and descriptors
(summed over their process trees, from C{/proc}) and the tunnels
completed; the report has a row per C{--row} seconds (60), the totals by
scenario, the faults injected and confirmed (reloads seen in A's log, the
worker replaced, B back), and the list of what was lost.  The results go to
C{benchmarks/results/soak-<timestamp>.json}, C{soak-latest.json} and
C{soak-latest.rst} (unless C{--no-save}).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import select
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _procs  # noqa: E402
import _servers  # noqa: E402
from _load import freePort  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
USER = b"soak"
PASSWORD = b"soak"
#: The loopback address whose destinations A sends through B.
CHAINED_HOST = "127.0.0.2"

CHUNK = 1 << 16
#: The bytes every stream is cut from: the same in every process.
BASE = random.Random(20).randbytes(CHUNK + 4096)
#: The longest any one scenario may take.
SCENARIO_TIMEOUT = 60.0
MIB = 1 << 20


# -- the streams ---------------------------------------------------------------


def chunksOf(seed: int, size: int):
    """The stream C{seed} names, C{size} bytes long, in chunks."""
    index = 0
    while size > 0:
        offset = (seed * 131 + index * 977) % 4096
        piece = BASE[offset : offset + min(CHUNK, size)]
        index += 1
        size -= len(piece)
        yield piece


def streamDigest(seed: int, size: int) -> bytes:
    hasher = hashlib.sha256()
    for piece in chunksOf(seed, size):
        hasher.update(piece)
    return hasher.digest()


class Verifier:
    """Compares bytes as they come with the stream C{seed} names."""

    def __init__(self, seed: int, size: int) -> None:
        self.size = size
        self.chunks = chunksOf(seed, size)
        self.current = b""
        self.position = 0
        self.count = 0
        self.corrupt = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            if self.position >= len(self.current):
                self.current = next(self.chunks, b"")
                self.position = 0
                if not self.current:
                    # More bytes than the stream has.
                    self.corrupt = True
                    self.count += len(view)
                    return
            size = min(len(view), len(self.current) - self.position)
            if view[:size] != self.current[self.position : self.position + size]:
                self.corrupt = True
            self.position += size
            self.count += size
            view = view[size:]

    @property
    def complete(self) -> bool:
        return self.count == self.size and not self.corrupt


# -- the targets ---------------------------------------------------------------


def _resetSocket(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _readLine(sock: socket.socket) -> bytes | None:
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            return None
        line += byte
        if len(line) > 200:
            return None
    return line


def _serveTarget(sock: socket.socket) -> None:
    sock.settimeout(SCENARIO_TIMEOUT * 2)
    try:
        line = _readLine(sock)
        if line is None:
            sock.close()
            return
        fields = line.split()
        kind, seed, size = fields[0], int(fields[1]), int(fields[2])
        if kind == b"echo":
            while data := sock.recv(CHUNK):
                sock.sendall(data)
            sock.close()
        elif kind == b"down":
            for piece in chunksOf(seed, size):
                sock.sendall(piece)
            sock.close()
        elif kind == b"up":
            hasher, count = hashlib.sha256(), 0
            while data := sock.recv(CHUNK):
                hasher.update(data)
                count += len(data)
            sock.sendall(hasher.digest() + count.to_bytes(8, "big"))
            sock.close()
        elif kind == b"reset":
            for piece in chunksOf(seed, size):
                sock.sendall(piece)
            _resetSocket(sock)
        elif kind == b"hang":
            while sock.recv(CHUNK):
                pass
            sock.close()
        elif kind == b"bindpeer":
            sock.close()
            host, port = fields[3].decode(), int(fields[4])
            with socket.create_connection((host, port), timeout=10) as peer:
                for piece in chunksOf(seed, size):
                    peer.sendall(piece)
        else:
            sock.close()
    except OSError:
        sock.close()


def _acceptLoop(listener: socket.socket) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serveTarget, args=(sock,), daemon=True).start()


def _udpEcho(sock: socket.socket) -> None:
    while True:
        try:
            data, address = sock.recvfrom(65536)
            sock.sendto(data, address)
        except OSError:
            return


def runTargets(arguments: dict) -> None:
    """The targets process: listen, print the ports, serve until orphaned."""
    parent = os.getppid()
    port = freePort()
    listeners = []
    for host in ("127.0.0.1", CHAINED_HOST):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        listeners.append(listener)
        threading.Thread(target=_acceptLoop, args=(listener,), daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    threading.Thread(target=_udpEcho, args=(udp,), daemon=True).start()
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(hole.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    print(
        json.dumps(
            {"tcp": port, "udp": udp.getsockname()[1], "hole": hole.getsockname()[1]}
        ),
        flush=True,
    )
    deadline = time.monotonic() + float(arguments.get("lifetime", 7200))
    while os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.5)


# -- the clients' side ---------------------------------------------------------


class Refused(Exception):
    """The proxy answered with a failure."""


class Ended(Exception):
    """The connection ended (C{kind}: eof or reset) in the middle of a reply."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def recvExact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except ConnectionResetError:
            raise Ended("reset") from None
        if not chunk:
            raise Ended("eof")
        data += chunk
    return data


def _address(host: str) -> bytes:
    return socket.inet_aton(host)


def socks5(
    sock: socket.socket,
    host: str,
    port: int,
    auth: bool = False,
    command: int = 1,
) -> tuple[str, int]:
    """A SOCKS5 request (method 00, or 02 with user/pass); the bound address."""
    method = 2 if auth else 0
    sock.sendall(bytes([5, 1, method]))
    if recvExact(sock, 2) != bytes([5, method]):
        raise Refused("method refused")
    if auth:
        sock.sendall(bytes([1, len(USER)]) + USER + bytes([len(PASSWORD)]) + PASSWORD)
        if recvExact(sock, 2) != b"\x01\x00":
            raise Refused("login refused")
    sock.sendall(bytes([5, command, 0, 1]) + _address(host) + port.to_bytes(2, "big"))
    return _socks5Reply(sock)


def _socks5Reply(sock: socket.socket) -> tuple[str, int]:
    head = recvExact(sock, 4)
    if head[1] != 0:
        raise Refused(f"SOCKS5 reply {head[1]:02x}")
    if head[3] == 1:
        address = socket.inet_ntoa(recvExact(sock, 4))
    elif head[3] == 4:
        address = socket.inet_ntop(socket.AF_INET6, recvExact(sock, 16))
    else:
        address = recvExact(sock, recvExact(sock, 1)[0]).decode()
    return address, int.from_bytes(recvExact(sock, 2), "big")


def socks4(sock: socket.socket, host: str, port: int, command: int = 1) -> tuple[str, int]:
    """A SOCKS4 request; the bound address."""
    sock.sendall(bytes([4, command]) + port.to_bytes(2, "big") + _address(host) + b"soak\x00")
    return _socks4Reply(sock)


def _socks4Reply(sock: socket.socket) -> tuple[str, int]:
    reply = recvExact(sock, 8)
    if reply[1] != 0x5A:
        raise Refused(f"SOCKS4 reply {reply[1]:02x}")
    return socket.inet_ntoa(reply[4:8]), int.from_bytes(reply[2:4], "big")


def socks6(sock: socket.socket, host: str, port: int, auth: bool = False) -> None:
    """A SOCKS6 CONNECT (username/password 0-RTT with C{auth})."""
    options = b""
    if auth:
        userpass = bytes([1, len(USER)]) + USER + bytes([len(PASSWORD)]) + PASSWORD
        body = b"\x02" + userpass
        body += b"\x00" * (-(4 + len(body)) % 4)
        options = (
            bytes.fromhex("0002 0008 0000 02 00")
            + (4).to_bytes(2, "big")
            + (4 + len(body)).to_bytes(2, "big")
            + body
        )
    sock.sendall(
        b"\x06\x01"
        + len(options).to_bytes(2, "big")
        + port.to_bytes(2, "big")
        + b"\x00\x01"
        + _address(host)
        + options
    )
    head = recvExact(sock, 4)
    if head[1] != 0:
        raise Refused(f"SOCKS6 authentication reply {head[1]:02x}")
    recvExact(sock, int.from_bytes(head[2:4], "big"))
    operation = recvExact(sock, 4)
    if operation[1] != 0:
        raise Refused(f"SOCKS6 reply {operation[1]:02x}")
    rest = recvExact(sock, 4)
    length = {1: 4, 4: 16}.get(rest[3], 0)
    recvExact(sock, length + int.from_bytes(operation[2:4], "big"))


class Context:
    """What a scenario needs: the ports, and a random generator."""

    def __init__(self, ports: dict, rng: random.Random) -> None:
        self.ports = ports
        self.rng = rng

    def proxy(self, which: str) -> socket.socket:
        """A connection to proxy C{which} ("A" or "B")."""
        try:
            sock = socket.create_connection(
                ("127.0.0.1", self.ports[which]), timeout=SCENARIO_TIMEOUT
            )
        except ConnectionRefusedError:
            raise NoProxy() from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def tunnel(
        self, via: str, version: int = 5, host: str = "127.0.0.1", auth: bool = False
    ) -> socket.socket:
        """A tunnel through C{via} ("A", "B", or "AB": A to 127.0.0.2)."""
        proxy = "B" if via == "B" else "A"
        if via == "AB":
            host = CHAINED_HOST
        sock = self.proxy(proxy)
        try:
            if version == 4:
                socks4(sock, host, self.ports["tcp"])
            elif version == 6:
                socks6(sock, host, self.ports["tcp"], auth)
            else:
                socks5(sock, host, self.ports["tcp"], auth)
        except BaseException:
            sock.close()
            raise
        return sock

    def seed(self) -> int:
        return self.rng.randrange(1 << 30)


class NoProxy(Exception):
    """The proxy's port refused the connection (it is down)."""


def readToEnd(
    sock: socket.socket, verifier: Verifier, slow: bool = False
) -> str:
    """Feed C{verifier} until the connection ends: eof, reset or timeout."""
    try:
        while True:
            chunk = sock.recv(16384 if slow else 1 << 20)
            if not chunk:
                return "eof"
            verifier.feed(chunk)
            if slow:
                time.sleep(0.01)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"


def judgeStream(end: str, verifier: Verifier) -> str:
    """The outcome of a stream that should end with a clean EOF."""
    if verifier.corrupt:
        return "corrupt"
    if end == "eof":
        return "ok" if verifier.count == verifier.size else "eof-short"
    return end


def scenarioEcho(context: Context, via: str, version: int, auth: bool) -> tuple[str, int]:
    seed, size = context.seed(), context.rng.choice((64, 512, 4096, 32768))
    with context.tunnel(via, version, auth=auth) as sock:
        sock.sendall(f"echo {seed} {size}\n".encode())
        for piece in chunksOf(seed, size):
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
        verifier = Verifier(seed, size)
        return judgeStream(readToEnd(sock, verifier), verifier), verifier.count


def scenarioDown(
    context: Context, via: str, size: int, version: int = 5, auth: bool = False,
    slow: bool = False,
) -> tuple[str, int]:
    seed = context.seed()
    with context.tunnel(via, version, auth=auth) as sock:
        sock.sendall(f"down {seed} {size}\n".encode())
        verifier = Verifier(seed, size)
        return judgeStream(readToEnd(sock, verifier, slow), verifier), verifier.count


def scenarioUp(context: Context, via: str, size: int) -> tuple[str, int]:
    seed = context.seed()
    with context.tunnel(via) as sock:
        sock.sendall(f"up {seed} {size}\n".encode())
        for piece in chunksOf(seed, size):
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = recvExact(sock, 40)
        except Ended as ended:
            return ("eof-short" if ended.kind == "eof" else ended.kind), 0
        if answer != streamDigest(seed, size) + size.to_bytes(8, "big"):
            return "corrupt", 0
        return "ok", size


def scenarioBulkEcho(context: Context, via: str, size: int) -> tuple[str, int]:
    """Both ways at once: a thread sends while this one checks the echo."""
    seed = context.seed()
    with context.tunnel(via) as sock:
        sock.sendall(f"echo {seed} {size}\n".encode())
        failed: list[BaseException] = []

        def send() -> None:
            try:
                for piece in chunksOf(seed, size):
                    sock.sendall(piece)
                sock.shutdown(socket.SHUT_WR)
            except OSError as error:
                failed.append(error)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        verifier = Verifier(seed, size)
        end = readToEnd(sock, verifier)
        sender.join(SCENARIO_TIMEOUT)
        return judgeStream(end, verifier), verifier.count


def scenarioReset(context: Context, via: str) -> tuple[str, int]:
    """The destination sends, then resets: the client must see a reset."""
    seed, size = context.seed(), context.rng.choice((1, 2, 4)) * MIB
    with context.tunnel(via) as sock:
        sock.sendall(f"reset {seed} {size}\n".encode())
        verifier = Verifier(seed, size)
        end = readToEnd(sock, verifier)
        if verifier.corrupt:
            return "corrupt", verifier.count
        if end == "reset":
            return "ok", verifier.count
        # A clean EOF after a reset: the cut looks like a complete end.
        return ("eof-short" if end == "eof" else end), verifier.count


def scenarioHang(context: Context, via: str) -> tuple[str, int]:
    """The destination says nothing: the client gives up after 2 s."""
    with context.tunnel(via) as sock:
        sock.sendall(b"hang 0 0\n")
        readable, _, _ = select.select([sock], [], [], 2.0)
        if readable:
            try:
                data = sock.recv(1)
            except ConnectionResetError:
                return "reset", 0
            return ("error" if data else "eof-short"), 0
        return "ok", 0


def scenarioNeverReads(context: Context, via: str) -> tuple[str, int]:
    """A client that never reads a 32 MiB download, and leaves after 3 s."""
    with context.tunnel(via) as sock:
        sock.sendall(f"down {context.seed()} {32 * MIB}\n".encode())
        time.sleep(3.0)
        _resetSocket(sock)
    return "ok", 0


def scenarioBind(context: Context, version: int) -> tuple[str, int]:
    """A BIND on A; the target connects to it and sends 256 KiB."""
    seed, size = context.seed(), 256 * 1024
    sock = context.proxy("A")
    with sock:
        if version == 4:
            host, port = socks4(sock, "0.0.0.0", 0, command=2)
        else:
            host, port = socks5(sock, "0.0.0.0", 0, command=2)
        if host == "0.0.0.0":
            host = "127.0.0.1"
        with socket.create_connection(("127.0.0.1", context.ports["tcp"]), 10) as ask:
            ask.sendall(f"bindpeer {seed} {size} {host} {port}\n".encode())
        if version == 4:
            _socks4Reply(sock)
        else:
            _socks5Reply(sock)
        verifier = Verifier(seed, size)
        return judgeStream(readToEnd(sock, verifier), verifier), verifier.count


def scenarioAbandonedBind(context: Context) -> tuple[str, int]:
    with context.proxy("A") as sock:
        socks5(sock, "0.0.0.0", 0, command=2)
    return "ok", 0


def scenarioAbandonedConnect(context: Context) -> tuple[str, int]:
    """A CONNECT to a destination that never answers, abandoned (EOF)."""
    with context.proxy("A") as sock:
        sock.sendall(b"\x05\x01\x00")
        recvExact(sock, 2)
        sock.sendall(
            b"\x05\x01\x00\x01" + _address("127.0.0.1")
            + context.ports["hole"].to_bytes(2, "big")
        )
        time.sleep(0.2)
        sock.shutdown(socket.SHUT_WR)
        readable, _, _ = select.select([sock], [], [], 5.0)
        if not readable:
            return "timeout", 0
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            return "reset", 0
        return ("ok" if not data else "error"), 0


def scenarioUdp(context: Context) -> tuple[str, int]:
    """A SOCKS5 UDP association on A: 20 datagrams to the UDP echo."""
    with context.proxy("A") as control:
        relay = socks5(control, "0.0.0.0", 0, command=3)
        if relay[0] == "0.0.0.0":
            relay = ("127.0.0.1", relay[1])
        header = b"\x00\x00\x00\x01" + _address("127.0.0.1") + context.ports["udp"].to_bytes(2, "big")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            udp.settimeout(2.0)
            seed = context.seed()
            sent = {}
            for index in range(20):
                payload = f"{seed}:{index}:".encode() + BASE[index * 50 : index * 50 + 400]
                sent[payload] = False
                udp.sendto(header + payload, relay)
            received = corrupt = 0
            try:
                while received < len(sent):
                    data, _ = udp.recvfrom(65536)
                    if data[:10] != header or data[10:] not in sent:
                        corrupt += 1
                        continue
                    received += 1
            except socket.timeout:
                pass
        if corrupt:
            return "corrupt", 0
        return ("ok" if received == len(sent) else "udp-loss"), received * 400


#: The scenarios: name -> (weight, the path it takes, run(context)).
SCENARIOS: dict[str, tuple[int, str, Callable[[Context], tuple[str, int]]]] = {
    "socks5 echo": (30, "A", lambda c: scenarioEcho(c, "A", 5, False)),
    "socks4 echo": (8, "A", lambda c: scenarioEcho(c, "A", 4, False)),
    "socks6 echo": (8, "A", lambda c: scenarioEcho(c, "A", 6, False)),
    "socks5 auth echo": (8, "B", lambda c: scenarioEcho(c, "B", 5, True)),
    "socks6 auth 64k down": (4, "B", lambda c: scenarioDown(c, "B", 65536, 6, True)),
    "chained echo": (6, "AB", lambda c: scenarioEcho(c, "AB", 5, False)),
    "chained 1M down": (3, "AB", lambda c: scenarioDown(c, "AB", MIB)),
    "bulk down": (
        2, "A", lambda c: scenarioDown(c, "A", c.rng.choice((8, 16, 32)) * MIB)
    ),
    "bulk up": (2, "A", lambda c: scenarioUp(c, "A", c.rng.choice((8, 16, 32)) * MIB)),
    "bulk echo": (2, "A", lambda c: scenarioBulkEcho(c, "A", c.rng.choice((4, 8)) * MIB)),
    "slow reader": (2, "A", lambda c: scenarioDown(c, "A", MIB, slow=True)),
    "never reads": (1, "A", lambda c: scenarioNeverReads(c, "A")),
    "destination reset": (3, "A", lambda c: scenarioReset(c, "A")),
    "chained reset": (2, "AB", lambda c: scenarioReset(c, "AB")),
    "destination hangs": (2, "A", lambda c: scenarioHang(c, "A")),
    "socks5 bind": (3, "A", lambda c: scenarioBind(c, 5)),
    "socks4 bind": (2, "A", lambda c: scenarioBind(c, 4)),
    "bind abandoned": (1, "A", scenarioAbandonedBind),
    "connect abandoned": (1, "A", scenarioAbandonedConnect),
    "socks5 udp": (3, "A", scenarioUdp),
}


def runOne(context: Context, name: str) -> dict:
    weight, path, run = SCENARIOS[name]
    started = time.time()
    try:
        outcome, count = run(context)
    except Refused:
        outcome, count = "refused", 0
    except NoProxy:
        outcome, count = "noproxy", 0
    except Ended as ended:
        outcome, count = ("eof-short" if ended.kind == "eof" else "reset"), 0
    except ConnectionResetError:
        outcome, count = "reset", 0
    except socket.timeout:
        outcome, count = "timeout", 0
    except OSError as error:
        outcome, count = "error", 0
        return {
            "s": name, "p": path, "o": outcome, "b": count, "t0": started,
            "t1": time.time(), "d": f"{type(error).__name__}: {error}",
        }
    return {"s": name, "p": path, "o": outcome, "b": count, "t0": started, "t1": time.time()}


def runLoad(arguments: dict) -> None:
    """A load process: threads running scenarios until the deadline."""
    deadline = float(arguments["deadline"])
    names = list(SCENARIOS)
    weights = [SCENARIOS[name][0] for name in names]
    lock = threading.Lock()

    def worker(index: int) -> None:
        context = Context(arguments["ports"], random.Random(arguments["seed"] * 1000 + index))
        while time.time() < deadline:
            name = context.rng.choices(names, weights)[0]
            result = runOne(context, name)
            with lock:
                sys.stdout.write(json.dumps(result) + "\n")
                sys.stdout.flush()

    threads = [
        threading.Thread(target=worker, args=(index,), daemon=True)
        for index in range(int(arguments["threads"]))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.time()) + SCENARIO_TIMEOUT + 10)


# -- the harness ---------------------------------------------------------------


class Server:
    """A socksd process the harness started (and may kill and restart)."""

    def __init__(self, name: str, arguments: list[str], directory: Path, port: int) -> None:
        self.name = name
        self.arguments = arguments
        self.port = port
        self.log = directory / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        twistd = _servers._findTwistd()
        command = [twistd, "-n", "--pidfile=", "socksd", *self.arguments]
        with open(self.log, "ab") as log:
            self.process = _procs.spawn(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, **_servers._socksdEnvironment()),
            )
        self.starts += 1
        self.command = shlex.join(command)

    def kill(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
            _procs.stop(self.process, grace=1.0)

    def stop(self) -> None:
        if self.process is not None:
            _procs.stop(self.process)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tree(self) -> list[int]:
        return _procs.processTree(self.process.pid) if self.alive() else []

    def measure(self) -> dict:
        """RSS, descriptors (and how many are sockets) of the process tree."""
        tree = self.tree()
        rss = fds = sockets = 0
        for pid in tree:
            rss += _procs._statusKilobytes(pid, "VmRSS")
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            fds += len(names)
            for name in names:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                        sockets += 1
                except OSError:
                    pass
        return {"rssKiB": rss, "fds": fds, "sockets": sockets, "processes": len(tree)}


def serving(port: int, target: int, auth: bool = False, timeout: float = 30.0) -> bool:
    """Wait until a SOCKS5 tunnel through C{port} echoes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                socks5(sock, "127.0.0.1", target, auth)
                sock.sendall(b"echo 1 4\nping")
                if recvExact(sock, 4) == b"ping":
                    return True
        except (OSError, Refused, Ended):
            pass
        time.sleep(0.2)
    return False


GOOD_RULES = """\
# soak rules, generation {generation}
client-default = "block"
destination-default = "pass"

[[client]]
action = "pass"
from = ["127.0.0.0/8"]
name = "loopback"

[[destination]]
action = "block"
to = ["10.{generation}.0.0/16"]
name = "generation-{generation}"
"""

BROKEN_RULES = """\
[[client]]
action = "maybe"
from = ["127.0.0.0/8"]
"""


class Soak:
    """The run: servers, load, faults, samples, results."""

    def __init__(self, options: argparse.Namespace, directory: Path) -> None:
        self.options = options
        self.directory = directory
        self.outcomes: list[dict] = []
        self.outcomesLock = threading.Lock()
        self.samples: list[dict] = []
        self.faults: list[dict] = []
        self.windows: list[tuple[float, float, set[str]]] = []
        self.rules = directory / "rules.toml"
        self.generation = 0

    # servers

    def startServers(self) -> None:
        targets = _procs.spawn(
            [sys.executable, __file__, "targets", json.dumps({"lifetime": self.options.duration + 600})],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        line = targets.stdout.readline()
        if not line:
            raise SystemExit("the targets did not start")
        self.ports = json.loads(line)
        self.targets = targets
        portA, portB, portMetrics = freePort(), freePort(), freePort()
        self.ports["A"], self.ports["B"] = portA, portB
        self.ports["metrics"] = portMetrics
        self.writeRules(good=True)
        extra = shlex.split(self.options.socksd_args)
        self.serverB = Server(
            "B",
            [
                "--listen", f"tcp:{portB}:interface=127.0.0.1",
                "--auth", f"memory:{USER.decode()}:{PASSWORD.decode()}",
                "--socks4-with-auth",
                *extra,
            ],
            self.directory,
            portB,
        )
        route = (
            f"{CHAINED_HOST}=socks5:proxy=tcp\\:127.0.0.1\\:{portB}"
            f":user={USER.decode()}:password={PASSWORD.decode()}"
        )
        self.serverA = Server(
            "A",
            [
                "--listen", f"tcp:{portA}:interface=127.0.0.1",
                "--workers", str(self.options.workers),
                "--rules", str(self.rules),
                "--route", route,
                "--metrics", f"tcp:{portMetrics}:interface=127.0.0.1",
                "--bind-timeout", "30",
                *extra,
            ],
            self.directory,
            portA,
        )
        self.serverB.start()
        self.serverA.start()
        if not serving(portB, self.ports["tcp"], auth=True):
            raise SystemExit(f"B does not serve: {self.serverB.text()[-2000:]}")
        if not serving(portA, self.ports["tcp"]):
            raise SystemExit(f"A does not serve: {self.serverA.text()[-2000:]}")

    def writeRules(self, good: bool) -> None:
        if good:
            self.generation += 1
            text = GOOD_RULES.format(generation=self.generation % 250)
        else:
            text = BROKEN_RULES
        temporary = self.rules.with_suffix(".new")
        temporary.write_text(text)
        temporary.replace(self.rules)

    # faults

    def fault(
        self,
        kind: str,
        affects: set[str],
        duration: float,
        at: float | None = None,
        **details: Any,
    ) -> None:
        """Record a fault injected at C{at} (now by default): what it
        hits, for C{duration} seconds."""
        now = time.time() if at is None else at
        self.faults.append({"t": now, "kind": kind, **details})
        if affects:
            self.windows.append((now, now + duration, affects))
        print(f"  {now - self.started:6.1f} s  {kind} {details or ''}", file=sys.stderr)

    def hangup(self, good: bool) -> None:
        self.writeRules(good)
        os.kill(self.serverA.process.pid, signal.SIGHUP)
        self.fault("SIGHUP, good rules" if good else "SIGHUP, broken rules", set(), 0)

    def killWorker(self) -> None:
        workers = [pid for pid in self.serverA.tree() if pid != self.serverA.process.pid]
        if not workers:
            self.fault("kill a worker: none found", set(), 0)
            return
        victim = random.choice(workers)
        at = time.time()
        os.kill(victim, signal.SIGKILL)
        self.fault("worker of A killed", {"A", "AB"}, 6.0, at=at, pid=victim)

    def killUpstream(self) -> None:
        at = time.time()
        self.serverB.kill()
        self.fault("B killed (upstream death)", {"B", "AB"}, 12.0, at=at)

    def restartUpstream(self) -> None:
        self.serverB.start()
        back = serving(self.serverB.port, self.ports["tcp"], auth=True, timeout=20)
        self.fault("B restarted", set(), 0, serving=back)

    def schedule(self) -> list[tuple[float, Callable[[], None]]]:
        period = self.options.period
        events = []
        offset = 0.0
        while offset < self.options.duration:
            for at, action in (
                (10, lambda: self.hangup(True)),
                (25, self.killWorker),
                (35, lambda: self.hangup(False)),
                (40, lambda: self.hangup(True)),
                (45, self.killUpstream),
                (49, self.restartUpstream),
            ):
                when = offset + at * period / 60.0
                if when < self.options.duration - 5:
                    events.append((when, action))
            offset += period
        return sorted(events, key=lambda event: event[0])

    # load

    def startLoad(self) -> None:
        self.deadline = time.time() + self.options.duration
        self.loads = []
        for index in range(self.options.load_processes):
            process = _procs.spawn(
                [
                    sys.executable,
                    __file__,
                    "load",
                    json.dumps(
                        {
                            "deadline": self.deadline,
                            "ports": self.ports,
                            "threads": self.options.threads,
                            "seed": self.options.seed * 100 + index,
                        }
                    ),
                ],
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            self.loads.append(process)
            threading.Thread(target=self.collect, args=(process,), daemon=True).start()

    def collect(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                outcome = json.loads(line)
            except ValueError:
                continue
            with self.outcomesLock:
                self.outcomes.append(outcome)

    # samples

    def sample(self) -> None:
        now = time.time()
        with self.outcomesLock:
            done = len(self.outcomes)
        self.samples.append(
            {
                "t": now - self.started,
                "A": self.serverA.measure(),
                "B": self.serverB.measure(),
                "tunnels": done,
            }
        )

    def run(self) -> dict:
        self.startServers()
        self.started = time.time()
        self.sample()
        baseline = self.samples[0]
        print(
            f"A: {self.serverA.command}\nB: {self.serverB.command}\n"
            f"soak for {self.options.duration:.0f} s ...",
            file=sys.stderr,
        )
        self.startLoad()
        events = self.schedule()
        nextSample = self.started + self.options.sample
        while time.time() < self.deadline:
            now = time.time()
            while events and self.started + events[0][0] <= now:
                _, action = events.pop(0)
                try:
                    action()
                except Exception as error:
                    self.fault(f"fault failed: {error}", set(), 0)
            if now >= nextSample:
                self.sample()
                nextSample += self.options.sample
            time.sleep(0.05)
        if not self.serverB.alive():
            self.restartUpstream()
        for process in self.loads:
            try:
                process.wait(SCENARIO_TIMEOUT + 15)
            except subprocess.TimeoutExpired:
                _procs.stop(process)
        self.sample()
        loadEnd = self.samples[-1]
        # Idle: what is still held once every client is gone.
        time.sleep(5)
        self.sample()
        self.samples[-1]["idle"] = True
        metrics = self.scrape()
        return self.results(baseline, loadEnd, metrics)

    def scrape(self) -> str:
        try:
            with socket.create_connection(("127.0.0.1", self.ports["metrics"]), timeout=5) as web:
                web.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                page = b""
                while chunk := web.recv(65536):
                    page += chunk
            return page.decode("utf-8", "replace")
        except OSError as error:
            return f"(no metrics: {error})"

    # results

    def classify(self, outcome: dict) -> str:
        """ok, casualty (of a fault on its path) or lost."""
        if outcome["o"] == "ok":
            return "ok"
        if outcome["o"] == "corrupt":
            return "lost"
        for start, end, affects in self.windows:
            if outcome["p"] in affects and outcome["t0"] <= end + 2 and outcome["t1"] >= start:
                return "casualty"
        return "lost"

    def results(self, baseline: dict, loadEnd: dict, metrics: str) -> dict:
        byScenario: dict[str, Counter] = defaultdict(Counter)
        outcomes: dict[str, Counter] = defaultdict(Counter)
        lost = []
        rows: dict[int, Counter] = defaultdict(Counter)
        casualties: Counter = Counter()
        for outcome in self.outcomes:
            kind = self.classify(outcome)
            if kind == "casualty":
                casualties[outcome["o"]] += 1
            name = outcome["s"]
            byScenario[name]["tunnels"] += 1
            byScenario[name][kind] += 1
            byScenario[name]["bytes"] += outcome["b"]
            outcomes[name][outcome["o"]] += 1
            rows[int((outcome["t1"] - self.started) // self.options.row)][kind] += 1
            if kind == "lost":
                lost.append(outcome)
        log = self.serverA.text()
        reloads = {
            "good": sum(1 for f in self.faults if f["kind"] == "SIGHUP, good rules"),
            "broken": sum(1 for f in self.faults if f["kind"] == "SIGHUP, broken rules"),
            "reloadedLines": len(re.findall(r"reloaded the rules on SIGHUP", log)),
            "keptLines": len(re.findall(r"keeping the previous rules", log)),
            "workersDied": len(re.findall(r"\) died", log)),
        }
        return {
            "started": self.started,
            "duration": self.options.duration,
            "settings": vars(self.options),
            "commands": {"A": self.serverA.command, "B": self.serverB.command},
            "samples": self.samples,
            "baseline": baseline,
            "loadEnd": loadEnd,
            "faults": self.faults,
            "reloads": reloads,
            "byScenario": {name: dict(counts) for name, counts in byScenario.items()},
            "outcomes": {name: dict(counts) for name, counts in outcomes.items()},
            "rows": {str(index): dict(counts) for index, counts in sorted(rows.items())},
            "lost": lost,
            "casualties": dict(casualties),
            "acceptErrors": re.findall(r"socksd_accept_errors_total\{.*", metrics),
            "tunnels": len(self.outcomes),
        }


# -- the report ----------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A reStructuredText grid-less (simple) table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    rule = "  ".join("=" * width for width in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), rule]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    lines.append(rule)
    return "\n".join(lines)


def _fds(measure: dict) -> str:
    return f"{measure['fds']} ({measure.get('sockets', '?')})"


def report(results: dict, row: float) -> str:
    samples = results["samples"]
    started = samples[0]
    out = []
    rows = []
    previous = started
    for boundary in range(int(row), int(results["duration"]) + int(row), int(row)):
        inside = [s for s in samples if previous["t"] < s["t"] <= boundary and not s.get("idle")]
        if not inside:
            continue
        last = inside[-1]
        tunnels = last["tunnels"] - previous["tunnels"]
        seconds = last["t"] - previous["t"]
        counts = results["rows"].get(str(boundary // int(row) - 1), {})
        rows.append(
            [
                f"{boundary / 60:.0f}" if row >= 60 else f"{boundary:.0f} s",
                f"{tunnels / seconds:.0f}" if seconds else "-",
                counts.get("ok", 0),
                counts.get("casualty", 0),
                counts.get("lost", 0),
                f"{last['A']['rssKiB'] / 1024:.1f}",
                _fds(last["A"]),
                f"{last['B']['rssKiB'] / 1024:.1f}",
                _fds(last["B"]),
            ]
        )
        previous = last
    idle = samples[-1]
    rows.append(
        [
            "idle",
            "-",
            "",
            "",
            "",
            f"{idle['A']['rssKiB'] / 1024:.1f}",
            _fds(idle["A"]),
            f"{idle['B']['rssKiB'] / 1024:.1f}",
            _fds(idle["B"]),
        ]
    )
    base = results["baseline"]
    rows.insert(
        0,
        [
            "0",
            "-",
            "",
            "",
            "",
            f"{base['A']['rssKiB'] / 1024:.1f}",
            _fds(base["A"]),
            f"{base['B']['rssKiB'] / 1024:.1f}",
            _fds(base["B"]),
        ],
    )
    unit = "min" if row >= 60 else "t"
    out.append(
        _table(
            [unit, "tunnels/s", "ok", "casualties", "lost", "A RSS MiB",
             "A fds (sockets)", "B RSS MiB", "B fds (sockets)"],
            rows,
        )
    )
    scenarioRows = []
    totals: Counter = Counter()
    for name in SCENARIOS:
        counts = results["byScenario"].get(name, {})
        if not counts:
            continue
        totals.update(counts)
        scenarioRows.append(
            [
                name,
                counts.get("tunnels", 0),
                counts.get("ok", 0),
                counts.get("casualty", 0),
                counts.get("lost", 0),
                f"{counts.get('bytes', 0) / MIB:.0f}",
            ]
        )
    scenarioRows.append(
        [
            "total",
            totals.get("tunnels", 0),
            totals.get("ok", 0),
            totals.get("casualty", 0),
            totals.get("lost", 0),
            f"{totals.get('bytes', 0) / MIB:.0f}",
        ]
    )
    out.append("")
    out.append(
        _table(["scenario", "tunnels", "ok", "casualties", "lost", "MiB checked"], scenarioRows)
    )
    kinds = Counter(fault["kind"] for fault in results["faults"])
    reloads = results["reloads"]
    out.append("")
    out.append(
        "Faults: "
        + ", ".join(f"{kind} x{count}" for kind, count in sorted(kinds.items()))
        + f". A's log: {reloads['reloadedLines']} 'reloaded the rules' lines"
        f" (per process), {reloads['keptLines']} 'keeping the previous rules',"
        f" {reloads['workersDied']} workers died (and were replaced)."
    )
    casualties = results.get("casualties", {})
    if casualties:
        out.append(
            "Casualties of the faults, by outcome: "
            + ", ".join(f"{k} {v}" for k, v in sorted(casualties.items(), key=lambda i: -i[1]))
            + "."
        )
    lost = results["lost"]
    why = Counter(item["o"] for item in lost)
    out.append(
        f"Lost: {len(lost)} of {results['tunnels']} tunnels"
        + (f" ({', '.join(f'{k} {v}' for k, v in why.most_common())})" if lost else "")
        + "."
    )
    for item in lost[:20]:
        out.append(
            f"  - {item['s']} ({item['p']}): {item['o']},"
            f" {item['t0'] - results['started']:.1f}-{item['t1'] - results['started']:.1f} s"
            + (f" {item['d']}" if "d" in item else "")
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "targets":
        runTargets(json.loads(argv[1]) if len(argv) > 1 else {})
        return 0
    if argv and argv[0] == "load":
        runLoad(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="one minute, 20 s period")
    parser.add_argument("--period", type=float, default=60.0, help="the fault cycle, seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--load-processes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--sample", type=float, default=5.0)
    parser.add_argument("--row", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--socksd-args", default="")
    parser.add_argument("--twistd", default=None)
    parser.add_argument("--output-dir", default=str(RESULTS))
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--keep", default=None, help="keep the servers' logs in this directory")
    options = parser.parse_args(_procs.glueOption(argv, "--socksd-args"))
    if options.quick:
        options.duration, options.period, options.row = 60.0, 20.0, 10.0
    if options.twistd:
        _servers.setTwistd(options.twistd)
    if _servers._findTwistd() is None:
        print("no twistd next to this Python", file=sys.stderr)
        return 2
    _procs.raiseFileLimit()
    random.seed(options.seed)
    with tempfile.TemporaryDirectory(prefix="socksd-soak-") as directory:
        if options.keep:
            directory = options.keep
            Path(directory).mkdir(parents=True, exist_ok=True)
        soak = Soak(options, Path(directory))
        try:
            results = soak.run()
        finally:
            for server in (getattr(soak, "serverA", None), getattr(soak, "serverB", None)):
                if server is not None:
                    server.stop()
            _procs.stopAll()
    text = report(results, options.row)
    print(text)
    if not options.no_save:
        output = Path(options.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for name in (f"soak-{stamp}.json", "soak-latest.json"):
            (output / name).write_text(json.dumps(results, indent=1, default=str))
        (output / "soak-latest.rst").write_text(text + "\n")
    return 1 if results["lost"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
