"""
The servers the tunnels lead to, for the socksd benchmarks.

Run as C{python _targets.py --lifetime SECONDS --echo-processes N}. It binds
three listening sockets on 127.0.0.1, prints
C{{"bulk": PORT, "echo": PORT, "once": PORT}} on one line, and serves until its parent
(the harness) goes away or C{--lifetime} passes:

  - B{bulk}: one forked process per connection, blocking sockets and 1 MiB
    buffers. The client sends C{"U"} or C{"D"} and a 64-bit big-endian byte
    count. For C{"U"} (upload) this sink reads that many bytes and answers
    the count back; for C{"D"} (download) this source sends that many bytes
    and closes.
  - B{echo}: N processes sharing the listening socket, each with its own
    epoll loop; every connection gets back what it sends, with
    C{TCP_NODELAY}.
  - B{once}: the same, except that the server closes each connection once
    it has echoed C{--once-size} bytes (the tunnels-per-second target).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import time

from _load import listeningSocket

CHUNK = 1 << 20


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def _serveBulkConnection(sock: socket.socket) -> None:
    sock.settimeout(120)
    header = bytearray()
    while len(header) < 9:
        chunk = sock.recv(9 - len(header))
        if not chunk:
            return
        header += chunk
    operation, count = header[0:1], int.from_bytes(header[1:9], "big")
    if operation == b"U":
        view = memoryview(bytearray(CHUNK))
        remaining = count
        while remaining > 0:
            received = sock.recv_into(view, min(remaining, CHUNK))
            if received == 0:
                return
            remaining -= received
        sock.sendall(count.to_bytes(8, "big"))
    elif operation == b"D":
        view = memoryview(bytes(CHUNK))
        remaining = count
        while remaining > 0:
            size = min(remaining, CHUNK)
            sock.sendall(view[:size])
            remaining -= size
        sock.shutdown(socket.SHUT_WR)
        # Wait (bounded by the timeout) for the client to close, so that
        # closing never turns into a reset that could cut the last bytes.
        while sock.recv(65536):
            pass


def serveBulk(listener: socket.socket, parent: int, deadline: float) -> None:
    """
    Accept bulk connections and fork one process for each.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener.settimeout(1.0)
    while time.monotonic() < deadline and not _orphaned(parent):
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            try:
                _serveBulkConnection(sock)
            except OSError:
                pass
            finally:
                sock.close()
                os._exit(0)
        sock.close()


def serveEcho(
    listeners: dict[socket.socket, int | None], parent: int, deadline: float
) -> None:
    """
    Echo every connection, with one epoll loop; several processes may run
    this on the same listeners.

    @param listeners: each listening socket, with how many bytes to echo
        before this side closes the connection (L{None}: echo until the
        client closes).
    """
    epoll = select.epoll()
    byFd = {}
    for listener, closeAfter in listeners.items():
        listener.setblocking(False)
        byFd[listener.fileno()] = (listener, closeAfter)
        epoll.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    connections: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}
    remaining: dict[int, int] = {}

    def drop(fd: int) -> None:
        epoll.unregister(fd)
        connections.pop(fd).close()
        pending.pop(fd, None)
        remaining.pop(fd, None)

    lastCheck = time.monotonic()
    while True:
        now = time.monotonic()
        if now - lastCheck > 1.0:
            lastCheck = now
            if now > deadline or _orphaned(parent):
                return
        for fd, events in epoll.poll(1.0):
            if fd in byFd:
                listener, closeAfter = byFd[fd]
                for _ in range(256):
                    try:
                        sock, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        # Out of descriptors, or a connection reset before
                        # it was accepted: try again on the next event.
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections[sock.fileno()] = sock
                    if closeAfter is not None:
                        remaining[sock.fileno()] = closeAfter
                    epoll.register(sock.fileno(), select.EPOLLIN)
                continue
            sock = connections.get(fd)
            if sock is None:
                continue
            try:
                if events & select.EPOLLOUT:
                    data = pending.pop(fd)
                else:
                    data = sock.recv(65536)
                    if not data:
                        drop(fd)
                        continue
                    if fd in remaining:
                        remaining[fd] -= len(data)
                sent = sock.send(data)
                if sent < len(data):
                    pending[fd] = data[sent:]
                    epoll.modify(fd, select.EPOLLOUT)
                    continue
                if remaining.get(fd, 1) <= 0:
                    # Everything echoed: this side closes first, so the
                    # TIME_WAIT stays on this server's port, and the
                    # clients' (and proxies') ephemeral ports stay free.
                    drop(fd)
                elif events & select.EPOLLOUT:
                    epoll.modify(fd, select.EPOLLIN)
            except BlockingIOError:
                continue
            except OSError:
                drop(fd)


def main() -> int:
    """
    Bind, report the ports, fork the servers, and wait for the end.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lifetime", type=float, default=3 * 3600)
    parser.add_argument("--echo-processes", type=int, default=2)
    parser.add_argument("--once-size", type=int, default=64)
    options = parser.parse_args()
    deadline = time.monotonic() + options.lifetime
    harness = os.getppid()
    bulk, echo, once = (listeningSocket(n) for n in (128, 4096, 4096))
    ports = {"bulk": bulk, "echo": echo, "once": once}
    print(
        json.dumps({name: sock.getsockname()[1] for name, sock in ports.items()}),
        flush=True,
    )
    me = os.getpid()
    children = []
    pid = os.fork()
    if pid == 0:
        echo.close()
        once.close()
        serveBulk(bulk, me, deadline)
        os._exit(0)
    children.append(pid)
    bulk.close()
    for _ in range(max(1, options.echo_processes)):
        pid = os.fork()
        if pid == 0:
            serveEcho({echo: None, once: options.once_size}, me, deadline)
            os._exit(0)
        children.append(pid)
    echo.close()
    once.close()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while time.monotonic() < deadline and not _orphaned(harness):
            time.sleep(0.5)
    finally:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
