"""
UDP datagrams per second through a socksd UDP association, against direct
UDP to the same echo server, in the same run.

    python benchmarks/udp.py [--duration SECONDS] [--window N]

Everything runs on 127.0.0.1 in one process with one reactor: a UDP echo
server, socksd (SocksServerFactory with its defaults), and a client that
keeps C{window} datagrams in flight and counts the echoes.  Each of the four
measurements (64-byte and 1200-byte payloads, direct and through socksd)
lasts C{duration} seconds (default 2), so the whole run takes about four
times that.  It prints a table; the numbers compare the two paths on one
machine, they are not absolute.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater

from socksd.server import SocksServerFactory

SIZES = (64, 1200)


class Echo(DatagramProtocol):
    """The UDP echo server."""

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.transport.write(data, addr)


class Pinger(DatagramProtocol):
    """
    Keeps C{window} datagrams in flight to C{target}, each with C{prefix}
    in front, and counts the answers for C{duration} seconds.  One pinger
    serves every payload size of a path: a UDP association accepts
    datagrams from one client port only.
    """

    def __init__(
        self, target: tuple[str, int], prefix: bytes, window: int, duration: float
    ) -> None:
        self.target = target
        self.prefix = prefix
        self.window = window
        self.duration = duration
        self.running = False

    def run(self, payload: bytes) -> Deferred[float]:
        self.datagram = self.prefix + payload
        self.answers = 0
        self.lastCount = -1
        self.done: Deferred[float] = Deferred()
        self.started = reactor.seconds()
        self.running = True
        for _ in range(self.window):
            self.transport.write(self.datagram, self.target)
        self.refill = LoopingCall(self._refill)
        self.refill.start(0.05, now=False)
        reactor.callLater(self.duration, self._stop)
        return self.done

    def _refill(self) -> None:
        # Datagrams can be lost: if nothing came back since the last check,
        # put a full window in flight again.
        if self.answers == self.lastCount:
            for _ in range(self.window):
                self.transport.write(self.datagram, self.target)
        self.lastCount = self.answers

    def _stop(self) -> None:
        self.running = False
        self.refill.stop()
        self.done.callback(self.answers / (reactor.seconds() - self.started))

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.running and len(data) == len(self.datagram):
            self.answers += 1
            self.transport.write(self.datagram, self.target)


class Control(Protocol):
    """The TCP control connection of the association: fires C{reply}."""

    def __init__(self) -> None:
        self.buffer = b""
        self.reply: Deferred[tuple[str, int]] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 12 and not self.reply.called:
            if self.buffer[:4] != b"\x05\x00\x05\x00":
                self.reply.errback(
                    RuntimeError(f"association refused: {self.buffer!r}")
                )
                return
            host = ".".join(str(b) for b in self.buffer[6:10])
            self.reply.callback((host, int.from_bytes(self.buffer[10:12], "big")))


async def main(duration: float, window: int) -> None:
    echoPort = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
    echo = ("127.0.0.1", echoPort.getHost().port)
    socks = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        SocksServerFactory(reactor)
    )
    control = await TCP4ClientEndpoint(
        reactor, "127.0.0.1", socks.getHost().port
    ).connect(Factory.forProtocol(Control))
    relay = await control.reply
    header = b"\x00\x00\x00\x01\x7f\x00\x00\x01" + echo[1].to_bytes(2, "big")
    directPinger = Pinger(echo, b"", window, duration)
    proxiedPinger = Pinger(relay, header, window, duration)
    ports = [
        reactor.listenUDP(0, pinger, interface="127.0.0.1")
        for pinger in (directPinger, proxiedPinger)
    ]
    rows = []
    for size in SIZES:
        direct = await directPinger.run(b"x" * size)
        # Let the last round's datagrams drain before the next one counts.
        await deferLater(reactor, 0.1, lambda: None)
        proxied = await proxiedPinger.run(b"x" * size)
        await deferLater(reactor, 0.1, lambda: None)
        rows.append((size, direct, proxied))
    for port in ports:
        await port.stopListening()
    control.transport.loseConnection()
    await socks.stopListening()
    await echoPort.stopListening()
    print(
        f"UDP echo round trips per second, {window} in flight, "
        f"{duration:g} s per measurement"
    )
    print(f"{'payload':>8} | {'direct':>10} | {'socksd':>10} | {'ratio':>6}")
    print(f"{'-' * 8}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 6}")
    for size, direct, proxied in rows:
        ratio = proxied / direct if direct else 0.0
        print(f"{size:>7}B | {direct:>10.0f} | {proxied:>10.0f} | {ratio:>6.2f}")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=2.0,
        help="seconds per measurement (default 2, at most 30)",
    )
    parser.add_argument(
        "--window", type=int, default=16, help="datagrams in flight (default 16)"
    )
    args = parser.parse_args(argv)
    duration = min(max(args.duration, 0.1), 30.0)
    result: list[int] = [0]

    def finished(outcome: Any) -> None:
        if hasattr(outcome, "printTraceback"):
            outcome.printTraceback()
            result[0] = 1
        reactor.stop()

    # A hard stop, whatever happens.
    reactor.callLater(duration * 4 + 30, reactor.stop)
    reactor.callWhenRunning(
        lambda: ensureDeferred(main(duration, max(1, args.window))).addBoth(finished)
    )
    reactor.run()
    return result[0]


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
