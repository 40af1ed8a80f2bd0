"""
Load generators for the socksd benchmarks.

Run as C{python _load.py MODE JSON-ARGUMENTS}; the last line printed is one
JSON object (the result, or C{{"error": ...}}). Each mode runs in its own
process, away from the harness, with plain sockets (blocking ones for bulk
data and ping-pong, epoll for many small tunnels), so that the generator is
not what is being measured. The modes:

  - C{bulk}: upload to or download from the bulk target through K tunnels
    (K processes released together by a barrier).
  - C{tps}: as many tunnels per second as possible at a fixed concurrency,
    spread over several processes; each tunnel is the SOCKS handshake, a
    CONNECT to the echo-once target, one echoed message, and the close
    that the target starts (so that TIME_WAIT stays on server ports and
    the ephemeral ports of the client and of the proxy never run out).
  - C{idle}: open N tunnels, echo one byte on each, report, and hold them
    open until a line arrives on stdin.
  - C{pingpong}: one tunnel, small messages echoed one at a time.

This module is also imported by the harness for L{Via}, L{openTunnel} and
L{percentile}; importing it has no side effects.
"""

from __future__ import annotations

import array
import errno
import json
import math
import multiprocessing
import random
import resource
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

CHUNK = 1 << 20
"""Bytes per send and per receive buffer for bulk transfers."""

PROTOCOLS = ("direct", "socks5", "socks4")

Parser = Callable[[bytearray], "int | None"]


class HandshakeFailed(Exception):
    """
    A proxy answered something other than success, or closed the tunnel.
    """


@dataclass(frozen=True, slots=True)
class Via:
    """
    How the load generator reaches a target: straight, or through a proxy.

    @ivar protocol: C{"direct"}, C{"socks5"} or C{"socks4"}.
    @ivar username: for SOCKS5 username/password (RFC 1929); L{None} to
        offer only method 00 (no authentication).
    """

    protocol: str
    host: str = "127.0.0.1"
    port: int = 0
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        if self.protocol != "direct" and not 0 < self.port < 65536:
            raise ValueError(f"bad proxy port {self.port!r}")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both a username and a password, or neither")
        if self.username is not None and self.protocol != "socks5":
            raise ValueError("username/password needs SOCKS5")
        if self.username is not None and not (
            0 < len(self.username.encode()) < 256
            and 0 < len(self.password.encode()) < 256
        ):
            raise ValueError("username and password must be 1-255 bytes")

    @classmethod
    def fromJson(cls, data: dict) -> Via:
        """
        Build a L{Via} from the dictionary that L{dataclasses.asdict} made.
        """
        return cls(**data)


def _expectExactly(expected: bytes) -> Parser:
    def parse(buffer: bytearray) -> int | None:
        if len(buffer) < len(expected):
            return None
        if buffer[: len(expected)] != expected:
            raise HandshakeFailed(
                f"expected {expected.hex(' ')}, "
                f"got {bytes(buffer[:len(expected)]).hex(' ')}"
            )
        return len(expected)

    return parse


def _socks5Reply(buffer: bytearray) -> int | None:
    if len(buffer) < 5:
        return None
    if buffer[0] != 5 or buffer[1] != 0:
        raise HandshakeFailed(f"SOCKS5 reply {bytes(buffer[:2]).hex(' ')}")
    addressType = buffer[3]
    if addressType == 1:
        length = 10
    elif addressType == 4:
        length = 22
    elif addressType == 3:
        length = 7 + buffer[4]
    else:
        raise HandshakeFailed(f"SOCKS5 reply address type {addressType}")
    return length if len(buffer) >= length else None


def _socks4Reply(buffer: bytearray) -> int | None:
    if len(buffer) < 8:
        return None
    if buffer[0] != 0 or buffer[1] != 0x5A:
        raise HandshakeFailed(f"SOCKS4 reply {bytes(buffer[:2]).hex(' ')}")
    return 8


def handshakeSteps(via: Via, target: tuple[str, int]) -> list[tuple[bytes, Parser]]:
    """
    The client's side of a tunnel's setup: what to send, one step at a time,
    and how to recognise each complete, successful answer.

    @param target: an IPv4 address and a port, the CONNECT destination.
    @return: C{(bytes to send, parser)} pairs; a parser returns the length
        of the complete answer, L{None} while it is incomplete, and raises
        L{HandshakeFailed} for a refusal. Empty for C{"direct"}.
    """
    address = socket.inet_aton(target[0])
    port = target[1].to_bytes(2, "big")
    if via.protocol == "direct":
        return []
    if via.protocol == "socks4":
        return [(b"\x04\x01" + port + address + b"\x00", _socks4Reply)]
    connect = b"\x05\x01\x00\x01" + address + port
    if via.username is None:
        return [(b"\x05\x01\x00", _expectExactly(b"\x05\x00")), (connect, _socks5Reply)]
    user, password = via.username.encode(), via.password.encode()
    login = bytes([1, len(user)]) + user + bytes([len(password)]) + password
    return [
        (b"\x05\x01\x02", _expectExactly(b"\x05\x02")),
        (login, _expectExactly(b"\x01\x00")),
        (connect, _socks5Reply),
    ]


def openTunnel(via: Via, target: tuple[str, int], timeout: float) -> socket.socket:
    """
    Open a blocking connection to C{target}, through the proxy C{via}.

    @return: a connected socket with C{TCP_NODELAY}, past the handshake.
    @raise HandshakeFailed: the proxy refused or closed.
    @raise OSError: a connection failed or timed out.
    """
    address = target if via.protocol == "direct" else (via.host, via.port)
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        for data, parse in handshakeSteps(via, target):
            sock.sendall(data)
            while (length := parse(buffer)) is None:
                chunk = sock.recv(4096)
                if not chunk:
                    raise HandshakeFailed("the proxy closed during the handshake")
                buffer += chunk
            del buffer[:length]
        if buffer:
            raise HandshakeFailed("unexpected bytes after the proxy's reply")
    except BaseException:
        sock.close()
        raise
    return sock


def recvExactly(sock: socket.socket, count: int) -> bytes:
    """
    Receive exactly C{count} bytes from a blocking socket.

    @raise HandshakeFailed: the peer closed first.
    """
    buffer = bytearray()
    while len(buffer) < count:
        chunk = sock.recv(count - len(buffer))
        if not chunk:
            raise HandshakeFailed(f"closed after {len(buffer)} of {count} bytes")
        buffer += chunk
    return bytes(buffer)


def percentile(sortedValues: list[float], fraction: float) -> float:
    """
    The nearest-rank percentile of an already sorted, non-empty list.
    """
    rank = max(1, math.ceil(fraction * len(sortedValues)))
    return sortedValues[min(rank, len(sortedValues)) - 1]


def raiseFileLimit() -> int:
    """
    Raise the soft C{RLIMIT_NOFILE} to the hard limit; return the result.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def _ephemeralRange() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(field) for field in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def listeningSocket(backlog: int) -> socket.socket:
    """
    A TCP socket listening on 127.0.0.1, on a port outside the kernel's
    ephemeral range.

    After thousands of short tunnels the ephemeral ports sit in TIME_WAIT,
    and binding to port 0 can then fail; ports below the range stay free.
    Falls back to port 0 when none of the tried ports is free.
    """
    low, high = _ephemeralRange()
    candidates = [p for p in range(20000, 32000) if not low <= p <= high]
    random.shuffle(candidates)
    for port in candidates[:500] + [0]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(errno.EADDRINUSE, "no free port on 127.0.0.1")


def freePort() -> int:
    """
    A port on 127.0.0.1 that was free a moment ago, outside the ephemeral
    range (see L{listeningSocket}), for a server to listen on.
    """
    with listeningSocket(1) as sock:
        return sock.getsockname()[1]


# -- bulk -------------------------------------------------------------------


def _transfer(
    via: Via,
    target: tuple[str, int],
    direction: str,
    count: int,
    timeout: float,
    barrier: object | None,
) -> tuple[float, float]:
    """
    Open one tunnel to the bulk target and move C{count} bytes one way.

    The clock starts after the tunnel is set up (and after C{barrier}, when
    several tunnels start together) and stops when the sink has
    acknowledged the last byte (upload) or the last byte has arrived
    (download).

    @return: the monotonic start and end times.
    """
    sock = openTunnel(via, target, timeout)
    with sock:
        if barrier is not None:
            barrier.wait(timeout)
        start = time.monotonic()
        sock.sendall((b"U" if direction == "up" else b"D") + count.to_bytes(8, "big"))
        if direction == "up":
            view = memoryview(bytes(CHUNK))
            remaining = count
            while remaining > 0:
                size = min(remaining, CHUNK)
                sock.sendall(view[:size])
                remaining -= size
            acknowledged = int.from_bytes(recvExactly(sock, 8), "big")
            if acknowledged != count:
                raise HandshakeFailed(
                    f"the sink counted {acknowledged} of {count} bytes"
                )
        else:
            view = memoryview(bytearray(CHUNK))
            remaining = count
            while remaining > 0:
                received = sock.recv_into(view, min(remaining, CHUNK))
                if received == 0:
                    raise HandshakeFailed(f"closed with {remaining} bytes to come")
                remaining -= received
        end = time.monotonic()
    return start, end


def _bulkWorker(via, target, direction, count, timeout, barrier, results) -> None:
    try:
        results.put(("ok", _transfer(via, target, direction, count, timeout, barrier)))
    except BaseException as error:
        if barrier is not None:
            barrier.abort()
        results.put(("error", f"{type(error).__name__}: {error}"))


def bulk(args: dict) -> dict:
    """
    Move C{bytesPerTunnel} bytes through each of C{tunnels} tunnels at once.

    @return: C{bytes}, C{seconds} (first start to last end) and C{MBps}
        (10**6 bytes per second, all tunnels together).
    """
    via = Via.fromJson(args["via"])
    target = tuple(args["target"])
    direction, tunnels = args["direction"], int(args["tunnels"])
    count, timeout = int(args["bytesPerTunnel"]), float(args["timeout"])
    if direction not in ("up", "down") or not 0 < tunnels <= 256 or count <= 0:
        raise ValueError("bad bulk arguments")
    if tunnels == 1:
        spans = [_transfer(via, target, direction, count, timeout, None)]
    else:
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(tunnels)
        results = context.Queue()
        workers = [
            context.Process(
                target=_bulkWorker,
                args=(via, target, direction, count, timeout, barrier, results),
                daemon=True,
            )
            for _ in range(tunnels)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=timeout * 2) for _ in workers]
        for worker in workers:
            worker.join(timeout)
        errors = [detail for kind, detail in outcomes if kind == "error"]
        if errors:
            raise HandshakeFailed(
                f"{len(errors)} of {tunnels} tunnels failed: {errors[0]}"
            )
        spans = [detail for _, detail in outcomes]
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    total = count * tunnels
    return {"bytes": total, "seconds": seconds, "MBps": total / seconds / 1e6}


# -- many small tunnels: one epoll engine for tps and idle -------------------


class _Flow:
    __slots__ = ("sock", "step", "buffer", "started", "setUp")

    def __init__(self, sock: socket.socket, started: float) -> None:
        self.sock = sock
        self.step = -1  # -1 while the TCP connection is in progress
        self.buffer = bytearray()
        self.started = started
        self.setUp = 0.0


class _Engine:
    """
    Non-blocking tunnels driven by one epoll: connect, handshake, send the
    payload, wait for its echo. L{poll} hands back the finished ones.
    """

    def __init__(
        self,
        via: Via,
        target: tuple[str, int],
        payload: bytes,
        expectClose: bool = False,
    ) -> None:
        self.address = target if via.protocol == "direct" else (via.host, via.port)
        self.steps = handshakeSteps(via, target)
        self.payload = payload
        self.expectClose = expectClose
        self.epoll = select.epoll()
        self.flows: dict[int, _Flow] = {}

    def start(self) -> str | None:
        """
        Begin one tunnel; return an error description if that failed at once.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        started = time.monotonic()
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return errno.errorcode.get(code, str(code))
        flow = _Flow(sock, started)
        self.flows[sock.fileno()] = flow
        self.epoll.register(sock.fileno(), select.EPOLLOUT)
        return None

    def _finish(self, flow: _Flow, error: str | None, done: list) -> None:
        self.epoll.unregister(flow.sock.fileno())
        del self.flows[flow.sock.fileno()]
        if error is not None:
            flow.sock.close()
        done.append((flow, error))

    def _advance(self, flow: _Flow, now: float) -> None:
        flow.step += 1
        if flow.step < len(self.steps):
            data = self.steps[flow.step][0]
        else:
            flow.setUp = now
            data = self.payload
        if flow.sock.send(data) != len(data):
            raise HandshakeFailed("short send")

    def poll(self, timeout: float) -> list[tuple[_Flow, str | None]]:
        """
        Wait up to C{timeout} seconds and progress the tunnels.

        @return: C{(flow, error)} for each tunnel that finished: error is
            L{None} once the payload came back whole (and, with
            C{expectClose}, the other side closed; the caller closes or
            keeps the socket), else a description (the socket is closed).
        """
        done: list[tuple[_Flow, str | None]] = []
        for fd, _ in self.epoll.poll(timeout):
            flow = self.flows.get(fd)
            if flow is None:
                continue
            now = time.monotonic()
            try:
                if flow.step == -1:
                    code = flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        self._finish(flow, errno.errorcode.get(code, str(code)), done)
                        continue
                    self.epoll.modify(fd, select.EPOLLIN)
                    self._advance(flow, now)
                    continue
                data = flow.sock.recv(65536)
                if not data:
                    if self.expectClose and flow.buffer == self.payload:
                        self._finish(flow, None, done)
                    else:
                        self._finish(flow, "closed early", done)
                    continue
                flow.buffer += data
                if flow.step < len(self.steps):
                    length = self.steps[flow.step][1](flow.buffer)
                    if length is not None:
                        del flow.buffer[:length]
                        self._advance(flow, now)
                elif len(flow.buffer) >= len(self.payload):
                    if flow.buffer != self.payload:
                        raise HandshakeFailed("the echo differs from the payload")
                    if not self.expectClose:
                        self._finish(flow, None, done)
            except BlockingIOError:
                continue
            except (OSError, HandshakeFailed) as error:
                if isinstance(error, OSError) and error.errno is not None:
                    description = errno.errorcode.get(error.errno, str(error))
                else:
                    description = str(error)
                self._finish(flow, description, done)
        return done

    def closeAll(self) -> None:
        """
        Close every tunnel still in progress.
        """
        for flow in list(self.flows.values()):
            self.epoll.unregister(flow.sock.fileno())
            flow.sock.close()
        self.flows.clear()
        self.epoll.close()


def _tpsWorker(args: dict, connection) -> None:
    """
    One process of the C{tps} mode: keep C{concurrency} tunnels going until
    C{measureUntil}; count those that end inside the measured window.
    """
    via = Via.fromJson(args["via"])
    engine = _Engine(
        via, tuple(args["target"]), b"x" * int(args["payloadSize"]), expectClose=True
    )
    concurrency, maxErrors = int(args["concurrency"]), int(args["maxErrors"])
    measureFrom, measureUntil = float(args["measureFrom"]), float(args["measureUntil"])
    setups = array.array("d")
    completed = errorCount = everything = 0
    errorKinds: Counter[str] = Counter()
    while time.monotonic() < float(args["startAt"]):
        time.sleep(0.005)
    while time.monotonic() < measureUntil and errorCount < maxErrors:
        while len(engine.flows) < concurrency and errorCount < maxErrors:
            error = engine.start()
            if error is not None:
                errorCount += 1
                errorKinds[error] += 1
                time.sleep(0.001)
        for flow, error in engine.poll(0.05):
            if error is not None:
                errorCount += 1
                errorKinds[error] += 1
                continue
            now = time.monotonic()
            flow.sock.close()
            everything += 1
            if measureFrom <= now < measureUntil:
                completed += 1
                setups.append(flow.setUp - flow.started)
    engine.closeAll()
    connection.send(
        {
            "completed": completed,
            "everything": everything,
            "errors": errorCount,
            "errorKinds": dict(errorKinds.most_common(5)),
            "setups": setups.tobytes(),
        }
    )
    connection.close()


def tps(args: dict) -> dict:
    """
    Tunnels per second at a fixed total concurrency, over C{processes}
    processes, measured for C{seconds} after C{warmup} seconds.

    @return: C{tunnelsPerSecond}, C{setupP50us} and C{setupP99us} (connect
        to the proxy until the complete CONNECT reply; direct: until the TCP
        connection is up), C{tunnels}, C{errors}, C{errorKinds}.
    """
    concurrency, processes = int(args["concurrency"]), int(args["processes"])
    seconds, warmup = float(args["seconds"]), float(args["warmup"])
    if not 0 < processes <= concurrency <= 4096 or not 0 < seconds <= 600:
        raise ValueError("bad tps arguments")
    startAt = time.monotonic() + 0.3
    shares = [
        concurrency // processes + (i < concurrency % processes)
        for i in range(processes)
    ]
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    for share in shares:
        workerArgs = dict(
            args,
            concurrency=share,
            startAt=startAt,
            measureFrom=startAt + warmup,
            measureUntil=startAt + warmup + seconds,
            maxErrors=int(args.get("maxErrors", 1000)),
        )
        receiver, sender = context.Pipe(duplex=False)
        worker = context.Process(
            target=_tpsWorker, args=(workerArgs, sender), daemon=True
        )
        worker.start()
        sender.close()
        pipes.append(receiver)
        workers.append(worker)
    budget = 0.3 + warmup + seconds + 30
    reports = []
    for receiver in pipes:
        if not receiver.poll(max(0.1, startAt + budget - time.monotonic())):
            raise TimeoutError("a tps worker did not report")
        reports.append(receiver.recv())
    for worker in workers:
        worker.join(5)
    setups: list[float] = []
    for report in reports:
        values = array.array("d")
        values.frombytes(report["setups"])
        setups.extend(values)
    setups.sort()
    completed = sum(r["completed"] for r in reports)
    kinds: Counter[str] = Counter()
    for report in reports:
        kinds.update(report["errorKinds"])
    result = {
        "tunnels": completed,
        "seconds": seconds,
        "tunnelsPerSecond": completed / seconds,
        "allTunnels": sum(r["everything"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "errorKinds": dict(kinds.most_common(5)),
    }
    if setups:
        result["setupP50us"] = percentile(setups, 0.50) * 1e6
        result["setupP99us"] = percentile(setups, 0.99) * 1e6
    return result


def idle(args: dict) -> dict:
    """
    Open C{count} tunnels (at most C{inflight} setting up at once), echo one
    byte through each, print a JSON line, and keep them open until a line
    arrives on stdin or C{holdSeconds} pass.
    """
    limit = raiseFileLimit()
    count, inflight = int(args["count"]), int(args["inflight"])
    count = min(count, max(0, limit - 64))
    engine = _Engine(Via.fromJson(args["via"]), tuple(args["target"]), b"i")
    opened: list[socket.socket] = []
    errorKinds: Counter[str] = Counter()
    errorCount = 0
    deadline = time.monotonic() + float(args["openSeconds"])
    maxErrors = max(10, count // 100)
    while (
        len(opened) < count and time.monotonic() < deadline and errorCount < maxErrors
    ):
        while len(engine.flows) < inflight and len(opened) + len(engine.flows) < count:
            error = engine.start()
            if error is not None:
                errorCount += 1
                errorKinds[error] += 1
                break
        for flow, error in engine.poll(0.05):
            if error is None:
                opened.append(flow.sock)
            else:
                errorCount += 1
                errorKinds[error] += 1
    engine.closeAll()
    report = {
        "opened": len(opened),
        "requested": int(args["count"]),
        "fileLimit": limit,
        "errors": errorCount,
        "errorKinds": dict(errorKinds.most_common(5)),
    }
    print(json.dumps(report), flush=True)
    readable, _, _ = select.select([sys.stdin], [], [], float(args["holdSeconds"]))
    if readable:
        sys.stdin.readline()
    for sock in opened:
        sock.close()
    return dict(report, closed=True)


def pingpong(args: dict) -> dict:
    """
    Echo C{size}-byte messages one at a time over one tunnel.

    @return: C{rttP50us}, C{rttP99us}, C{rttMeanUs} over C{count} round
        trips, after C{warmup} unmeasured ones.
    """
    via = Via.fromJson(args["via"])
    size, count, warmup = int(args["size"]), int(args["count"]), int(args["warmup"])
    if not 0 < size <= 65536 or not 0 < count <= 10_000_000:
        raise ValueError("bad pingpong arguments")
    message = b"p" * size
    samples: list[float] = []
    with openTunnel(via, tuple(args["target"]), float(args["timeout"])) as sock:
        for index in range(warmup + count):
            start = time.perf_counter_ns()
            sock.sendall(message)
            if recvExactly(sock, size) != message:
                raise HandshakeFailed("the echo differs from the message")
            if index >= warmup:
                samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "rttP50us": percentile(samples, 0.50),
        "rttP99us": percentile(samples, 0.99),
        "rttMeanUs": sum(samples) / len(samples),
        "count": count,
    }


MODES = {"bulk": bulk, "tps": tps, "idle": idle, "pingpong": pingpong}


def main(argv: list[str]) -> int:
    """
    Run one mode; print its result (or error) as the last JSON line.
    """
    if len(argv) != 3 or argv[1] not in MODES:
        print(f"usage: {argv[0]} {{{','.join(MODES)}}} JSON", file=sys.stderr)
        return 2
    raiseFileLimit()
    try:
        result = MODES[argv[1]](json.loads(argv[2]))
    except Exception as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
