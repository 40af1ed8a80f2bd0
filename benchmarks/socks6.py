#!/usr/bin/env python3
"""
SOCKS6 against SOCKS5, and the cost of authentication, on one socksd.

A standalone script (it imports nothing from the rest of C{benchmarks/}):

    venv/bin/python benchmarks/socks6.py            # under 2 minutes
    venv/bin/python benchmarks/socks6.py --quick    # under 30 seconds
    venv/bin/python benchmarks/socks6.py --rtt-ms 0,2,10

It starts, on 127.0.0.1 only:

  - an echo target (its own process) that echoes what it is sent and
    closes the connection once it has echoed L{PAYLOAD} bytes: a server
    that speaks only after the client's request;
  - socksd with C{--auth memory:bench:bench} (C{twistd -n socksd}), which
    serves SOCKS5 with username/password and SOCKS6 on one port;
  - a second socksd, identical but without C{--auth}, for SOCKS5 without
    authentication (with C{--auth}, socksd refuses SOCKS5 method 00);
  - in this process, a relay between the client and the proxy that delays
    each flight by half of C{--rtt-ms} each way and counts the client-proxy
    round trips (turns from client-to-proxy to proxy-to-client bytes).

The clients are socksd's own Twisted endpoints (L{SOCKS5ClientEndpoint},
L{SOCKS6ClientEndpoint}), in this process.  Four cases:

  - C{socks6 0-RTT}: SOCKS6, username/password in the request, the
    application's request as initial data;
  - C{socks6 session}: SOCKS6 inside a session opened once with
    L{socks6Noop} (no credentials per request), request as initial data;
  - C{socks5 no auth}: SOCKS5 method 00, then the request;
  - C{socks5 user/pass}: SOCKS5 with RFC 1929, then the request.

For each added RTT it measures the time from C{connect()} to the first
response byte from the target (p50, p99 over C{--tunnels} tunnels, cases
interleaved) and tunnels per second (one tunnel = handshake, a
L{PAYLOAD}-byte request echoed, the target's close), sequentially and with
C{--concurrency} tunnels in flight: the median of C{--rounds} windows of
C{--tps-seconds}, the cases interleaved.  RTT 0 goes
straight to the proxy (no relay); the round trips are then counted through
a relay that does not delay.  Ratios are against C{socks5 user/pass}.
Every process started is killed at the end (and on an error or Ctrl-C);
a watchdog ends the run if it overruns its time budget.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from twisted.internet import defer, protocol, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint  # noqa: E402

from socksd.client import (  # noqa: E402
    SOCKS5ClientEndpoint,
    SOCKS6ClientEndpoint,
    Socks6Session,
    socks6Noop,
)

USERNAME = "bench"
PASSWORD = "bench"
PAYLOAD = b"Q" * 64
CASES = ("socks6 0-RTT", "socks6 session", "socks5 no auth", "socks5 user/pass")
BASELINE = "socks5 user/pass"
TUNNEL_TIMEOUT = 10.0

_TARGET = r"""
import sys
from twisted.internet import protocol, reactor

SIZE = int(sys.argv[1])

class Echo(protocol.Protocol):
    def connectionMade(self):
        self.count = 0
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.transport.write(data)
        self.count += len(data)
        if self.count >= SIZE:
            self.transport.loseConnection()

port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo),
                         backlog=1024, interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.callLater(float(sys.argv[2]), reactor.stop)
reactor.run()
"""


# Processes ------------------------------------------------------------------

_children: list[subprocess.Popen] = []


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    """Start C{command} in a new process group and remember it."""
    child = subprocess.Popen(command, start_new_session=True, **kwargs)
    _children.append(child)
    return child


def stopChildren() -> None:
    """SIGTERM, then SIGKILL, each started process group, by its id."""
    for child in _children:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(child.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                child.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue
        for stream in (child.stdout, child.stderr, child.stdin):
            if stream is not None:
                stream.close()
    _children.clear()


def freePort() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def waitListening(port: int, child: subprocess.Popen, timeout: float) -> None:
    """Wait until something accepts on C{port}, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"process {child.args!r} exited with {child.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def findTwistd(given: str | None) -> str:
    """C{--twistd}, else the C{twistd} next to this Python, else C{PATH}'s."""
    if given:
        return given
    sibling = Path(sys.executable).parent / "twistd"
    if sibling.exists():
        return str(sibling)
    return "twistd"


def startTarget(lifetime: float) -> int:
    """Start the echo target; return its port."""
    child = spawn(
        [sys.executable, "-c", _TARGET, str(len(PAYLOAD)), str(lifetime)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline()
    if not line.strip():
        raise RuntimeError("the echo target did not start")
    return int(line)


def startSocksd(twistd: str, auth: bool, workdir: str, extra: list[str]) -> int:
    """Start one socksd; return its port."""
    port = freePort()
    command = [
        twistd, "-n", "--pidfile=", "socksd",
        "--listen", f"tcp:{port}:interface=127.0.0.1",
    ]
    if auth:
        command += ["--auth", f"memory:{USERNAME}:{PASSWORD}"]
    command += extra
    environment = dict(os.environ)
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(REPOSITORY) + (os.pathsep + path if path else "")
    child = spawn(
        command,
        cwd=workdir,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    waitListening(port, child, 20.0)
    return port


# The delaying, counting relay -----------------------------------------------


class _Delayed:
    """
    One direction of a relay: writes each chunk C{delay} seconds after it
    arrived, in order, then calls C{onDeliver}.
    """

    def __init__(self, clock, delay: float, onDeliver, stats: list) -> None:
        self.clock = clock
        self.stats = stats
        self.delay = delay
        self.onDeliver = onDeliver
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.transport = None
        self.pending = None

    def push(self, data: bytes | None) -> None:
        """Queue C{data} (L{None}: close once everything before is written)."""
        self.queue.append((self.clock.seconds() + self.delay, data))
        if self.delay == 0 and self.transport is not None:
            self.drain()
        elif self.pending is None and self.transport is not None:
            self.pending = self.clock.callLater(self.delay, self.drain)

    def attach(self, transport) -> None:
        """Start writing to C{transport}."""
        self.transport = transport
        if self.queue:
            self.drain()

    def drain(self) -> None:
        self.pending = None
        now = self.clock.seconds()
        while self.queue and self.queue[0][0] <= now + 1e-4:
            due, data = self.queue.popleft()
            if data is None:
                self.transport.loseConnection()
                self.queue.clear()
                return
            self.onDeliver()
            self.transport.write(data)
            # Achieved delay: due time, minus the nominal delay, from now.
            self.stats[0] += now - (due - self.delay)
            self.stats[1] += 1
        if self.queue:
            self.pending = self.clock.callLater(
                max(0.0, self.queue[0][0] - now), self.drain
            )


class _RelayUp(protocol.Protocol):
    """The relay's connection to the proxy."""

    def __init__(self, relay: "_RelayDown") -> None:
        self.relay = relay

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.relay.up.attach(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.relay.down.push(data)

    def connectionLost(self, reason) -> None:
        self.relay.down.push(None)


class _RelayDown(protocol.Protocol):
    """
    The relay's connection from a client.

    @ivar turns: client-proxy round trips so far: how many times bytes went
        to the client after bytes had gone to the proxy (or first).
    """

    def connectionMade(self) -> None:
        clock = self.factory.clock
        delay = self.factory.oneWay
        self.turns = 0
        self.lastWay = "up"
        self.up = _Delayed(clock, delay, self._wentUp, self.factory.delays)
        self.down = _Delayed(clock, delay, self._wentDown, self.factory.delays)
        self.transport.setTcpNoDelay(True)
        self.down.attach(self.transport)
        self.factory.last = self
        endpoint = TCP4ClientEndpoint(clock, "127.0.0.1", self.factory.proxyPort)
        d = endpoint.connect(protocol.Factory.forProtocol(lambda: _RelayUp(self)))
        d.addErrback(lambda _: self.transport.loseConnection())

    def _wentUp(self) -> None:
        self.lastWay = "up"

    def _wentDown(self) -> None:
        if self.lastWay == "up":
            self.turns += 1
        self.lastWay = "down"

    def dataReceived(self, data: bytes) -> None:
        self.up.push(data)

    def connectionLost(self, reason) -> None:
        self.up.push(None)


class RelayFactory(protocol.ServerFactory):
    """A relay to C{proxyPort} adding C{rttMs} of round-trip time."""

    protocol = _RelayDown

    def __init__(self, clock, proxyPort: int, rttMs: float) -> None:
        self.clock = clock
        self.proxyPort = proxyPort
        self.oneWay = rttMs / 2000.0
        self.last: _RelayDown | None = None
        #: total seconds flights actually waited, and how many flights
        self.delays = [0.0, 0]


# The client side ------------------------------------------------------------


class _Probe(protocol.Protocol):
    """
    The application: sends L{PAYLOAD} once the tunnel is up (unless it went
    as initial data), notes the first response byte, ends on the close.
    """

    def __init__(self, started: float, sendPayload: bool, relay, done) -> None:
        self.started = started
        self.sendPayload = sendPayload
        self.relay = relay
        self.done = done
        self.received = 0
        self.firstByte: float | None = None
        self.turns: int | None = None

    def connectionMade(self) -> None:
        if self.sendPayload:
            self.transport.write(PAYLOAD)

    def dataReceived(self, data: bytes) -> None:
        if self.firstByte is None:
            self.firstByte = time.perf_counter() - self.started
            if self.relay is not None:
                self.turns = self._relayTurns()
        self.received += len(data)

    def _relayTurns(self) -> int | None:
        # Tunnels whose turns are read run one at a time, so the relay's
        # latest connection is this tunnel's.
        last = self.relay.last
        return None if last is None else last.turns

    def connectionLost(self, reason) -> None:
        done, self.done = self.done, None
        if done is not None and not done.called:
            if self.received >= len(PAYLOAD):
                done.callback(self)
            else:
                done.errback(RuntimeError(f"only {self.received} bytes echoed"))


class Cases:
    """How each case connects, through one proxy endpoint per server."""

    def __init__(self, reactor, authPort: int, plainPort: int, target: int) -> None:
        self.reactor = reactor
        self.authPort = authPort
        self.plainPort = plainPort
        self.target = target
        self.session: Socks6Session | None = None

    def proxy(self, port: int) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, "127.0.0.1", port)

    @defer.inlineCallbacks
    def openSession(self, authPort: int):
        """Open a SOCKS6 session (one NOOP with the credentials)."""
        session = Socks6Session()
        yield socks6Noop(self.proxy(authPort), session, username=USERNAME, password=PASSWORD)
        if session.sessionId is None:
            raise RuntimeError("the proxy opened no session")
        self.session = session

    def endpoint(self, case: str, authPort: int, plainPort: int):
        """The endpoint for C{case}, and whether the app sends the payload."""
        host = "127.0.0.1"
        if case == "socks6 0-RTT":
            return SOCKS6ClientEndpoint(
                self.proxy(authPort), host, self.target,
                username=USERNAME, password=PASSWORD, initialData=PAYLOAD,
            ), False
        if case == "socks6 session":
            return SOCKS6ClientEndpoint(
                self.proxy(authPort), host, self.target,
                session=self.session, initialData=PAYLOAD,
            ), False
        if case == "socks5 no auth":
            return SOCKS5ClientEndpoint(self.proxy(plainPort), host, self.target), True
        if case == "socks5 user/pass":
            return SOCKS5ClientEndpoint(
                self.proxy(authPort), host, self.target,
                username=USERNAME, password=PASSWORD,
            ), True
        raise ValueError(case)

    def tunnel(self, case: str, via: "Via"):
        """
        One tunnel; fires with the L{_Probe} (C{firstByte} in seconds,
        C{turns} when through a relay) once the target has closed.
        """
        endpoint, send = self.endpoint(case, via.authPort, via.plainPort)
        done = defer.Deferred()
        relay = via.relayFor(case)
        started = time.perf_counter()
        factory = protocol.Factory.forProtocol(
            lambda: _Probe(started, send, relay, done)
        )
        connecting = endpoint.connect(factory)
        connecting.addErrback(lambda failure: done.called or done.errback(failure))
        # A tunnel that hangs fails (TimeoutError) instead of stalling the run.
        done.addTimeout(TUNNEL_TIMEOUT, self.reactor)
        return done


class Via:
    """The ports the clients use: the proxies', or relays in front of them."""

    def __init__(self, authPort, plainPort, authRelay=None, plainRelay=None) -> None:
        self.authPort = authPort
        self.plainPort = plainPort
        self.authRelay = authRelay
        self.plainRelay = plainRelay

    def relayFor(self, case: str):
        return self.plainRelay if case == "socks5 no auth" else self.authRelay


@defer.inlineCallbacks
def viaRelays(reactor, authPort: int, plainPort: int, rttMs: float):
    """Relays with C{rttMs} in front of both proxies; fires with (Via, ports)."""
    authRelay = RelayFactory(reactor, authPort, rttMs)
    plainRelay = RelayFactory(reactor, plainPort, rttMs)
    a = reactor.listenTCP(0, authRelay, backlog=1024, interface="127.0.0.1")
    p = reactor.listenTCP(0, plainRelay, backlog=1024, interface="127.0.0.1")
    yield None
    return Via(a.getHost().port, p.getHost().port, authRelay, plainRelay), [a, p]


def achievedRtt(via: "Via") -> float | None:
    """The mean added RTT the relays achieved, in ms (two flights' delays)."""
    total = count = 0
    for relay in (via.authRelay, via.plainRelay):
        if relay is not None:
            total += relay.delays[0]
            count += relay.delays[1]
    return 2000.0 * total / count if count else None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@defer.inlineCallbacks
def latencies(cases: Cases, via: Via, count: int, deadline: float):
    """C{count} tunnels per case, interleaved; first-byte times and turns."""
    times = {case: [] for case in CASES}
    turns = {case: set() for case in CASES}
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        for case in CASES:
            probe = yield cases.tunnel(case, via)
            times[case].append(probe.firstByte)
            if probe.turns is not None:
                turns[case].add(probe.turns)
    return times, turns


@defer.inlineCallbacks
def tunnelsPerSecond(cases: Cases, via: Via, case: str, concurrency: int, seconds: float):
    """Tunnels completed per second with C{concurrency} in flight."""
    start = time.perf_counter()
    stopAt = start + seconds
    completed = [0]
    failures: list[str] = []

    @defer.inlineCallbacks
    def worker():
        while time.perf_counter() < stopAt and len(failures) < 20:
            try:
                yield cases.tunnel(case, via)
            except Exception as e:  # noqa: BLE001 - counted and reported
                failures.append(f"{type(e).__name__}: {e}")
                continue
            if time.perf_counter() <= stopAt:
                completed[0] += 1

    yield defer.gatherResults([worker() for _ in range(concurrency)])
    return completed[0] / seconds, failures


# Reporting ------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}x"


def table(results: dict, concurrency: int) -> str:
    """The printed table: one block per added RTT."""
    lines = []
    header = (
        f"{'case':<17} {'RTs':>4}  {'TTFB p50 ms':>11} {'ratio':>6}  "
        f"{'p99 ms':>7} {'ratio':>6}  {'seq tun/s':>9} {'ratio':>6}  "
        f"{'c' + str(concurrency) + ' tun/s':>9} {'ratio':>6}"
    )
    for rtt, block in results["blocks"].items():
        lines.append("")
        achieved = block["achieved"]
        lines.append(
            f"added client-proxy RTT {rtt:g} ms"
            + ("" if achieved is None else f" (achieved by the relay: {achieved:.2f} ms)")
            + f"; first-byte samples per case: {block['samples']}; "
            f"tunnels/s: median of {results['rounds']} window(s) of {results['window']:g} s"
        )
        lines.append(header)
        lines.append("-" * len(header))
        base = block["cases"][BASELINE]
        for case in CASES:
            row = block["cases"][case]
            turns = results["turns"].get(case) or set()
            rts = "-" if not turns else "-".join(
                str(t) for t in sorted({min(turns), max(turns)})
            )
            lines.append(
                f"{case:<17} {rts:>4}  {row['p50'] * 1e3:>11.3f} "
                f"{_ratio(row['p50'], base['p50']):>6}  "
                f"{row['p99'] * 1e3:>7.3f} {_ratio(row['p99'], base['p99']):>6}  "
                f"{row['seq']:>9.0f} {_ratio(row['seq'], base['seq']):>6}  "
                f"{row['conc']:>9.0f} {_ratio(row['conc'], base['conc']):>6}"
            )
        plain = block["cases"]["socks5 no auth"]
        lines.append(
            "socks5 user/pass / no auth, tunnels/s: "
            f"sequential {_ratio(base['seq'], plain['seq'])}, "
            f"c{concurrency} {_ratio(base['conc'], plain['conc'])}; "
            f"TTFB p50 {_ratio(base['p50'], plain['p50'])}"
        )
        for case, failures in block["failures"].items():
            if failures:
                lines.append(f"  {case}: {len(failures)} failed tunnels, e.g. {failures[0]}")
    lines.append("")
    lines.append(
        "RTs: client-proxy round trips before the first response byte, counted "
        "by the relay (min-max over the tunnels through it)."
    )
    lines.append(
        "ratio: this case / socks5 user/pass (TTFB: lower is better; "
        "tunnels/s: higher is better)."
    )
    return "\n".join(lines)


# Main -----------------------------------------------------------------------


def parseArguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="under 30 s")
    parser.add_argument(
        "--rtt-ms", default="0,5",
        help="added client-proxy round-trip times, comma-separated (default 0,5)",
    )
    parser.add_argument("--tunnels", type=int, help="first-byte samples per case")
    parser.add_argument("--tps-seconds", type=float, help="window of each tunnels/s figure")
    parser.add_argument(
        "--rounds", type=int,
        help="tunnels/s windows per case and concurrency (median reported)",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--twistd", help="the twistd to run socksd with")
    parser.add_argument(
        "--socksd-args", default="",
        help="extra socksd arguments for both servers (space-separated)",
    )
    arguments = parser.parse_args(argv)
    arguments.rtts = [float(x) for x in arguments.rtt_ms.split(",") if x.strip()]
    if any(r < 0 or r > 100 for r in arguments.rtts):
        parser.error("--rtt-ms values must be within 0..100")
    if arguments.tunnels is None:
        arguments.tunnels = 40 if arguments.quick else 200
    if arguments.tps_seconds is None:
        arguments.tps_seconds = 0.6 if arguments.quick else 0.8
    if arguments.rounds is None:
        arguments.rounds = 1 if arguments.quick else 3
    arguments.budget = 28.0 if arguments.quick else 115.0
    return arguments


@defer.inlineCallbacks
def measure(reactor, arguments, cases: Cases, authPort: int, plainPort: int, budgetEnd: float):
    results = {
        "blocks": {},
        "turns": {case: set() for case in CASES},
        "rounds": arguments.rounds,
        "window": arguments.tps_seconds,
    }
    # Round trips, counted through relays that add no delay.
    via, ports = yield viaRelays(reactor, authPort, plainPort, 0.0)
    for _ in range(5):
        for case in CASES:
            probe = yield cases.tunnel(case, via)
            if probe.turns is not None:
                results["turns"][case].add(probe.turns)
    for port in ports:
        yield port.stopListening()
    for rtt in arguments.rtts:
        ports = []
        if rtt == 0:
            via = Via(authPort, plainPort)
        else:
            via, ports = yield viaRelays(reactor, authPort, plainPort, rtt)
        # Leave time for the tunnels/s windows of this and later blocks.
        left = len(arguments.rtts) - len(results["blocks"])
        tpsTime = 2 * len(CASES) * (arguments.tps_seconds + 0.2) * arguments.rounds * left
        latencyEnd = time.monotonic() + max(
            1.0, (budgetEnd - time.monotonic() - tpsTime) / left
        )
        print(f"rtt {rtt:g} ms: first-byte times...", file=sys.stderr)
        times, turns = yield latencies(cases, via, arguments.tunnels, latencyEnd)
        for case in CASES:
            results["turns"][case] |= turns[case]
        block = {
            "samples": len(times[BASELINE]),
            "cases": {},
            "failures": {},
            "achieved": achievedRtt(via),
        }
        rates = {case: {"seq": [], "conc": []} for case in CASES}
        for case in CASES:
            block["failures"][case] = []
        # Rounds of short windows, cases interleaved, so that a slow spell
        # of the machine does not land on one case only; medians reported.
        for round in range(arguments.rounds):
            print(f"rtt {rtt:g} ms: tunnels/s, round {round + 1}...", file=sys.stderr)
            for case in CASES:
                for key, concurrency in (("seq", 1), ("conc", arguments.concurrency)):
                    rate, failures = yield tunnelsPerSecond(
                        cases, via, case, concurrency, arguments.tps_seconds
                    )
                    rates[case][key].append(rate)
                    block["failures"][case] += failures
        for case in CASES:
            block["cases"][case] = {
                "p50": percentile(times[case], 0.5),
                "p99": percentile(times[case], 0.99),
                "seq": percentile(rates[case]["seq"], 0.5),
                "conc": percentile(rates[case]["conc"], 0.5),
            }
        results["blocks"][rtt] = block
        for port in ports:
            yield port.stopListening()
    return results


def main(argv: list[str]) -> int:
    arguments = parseArguments(argv)
    began = time.monotonic()
    twistd = findTwistd(arguments.twistd)
    workdir = tempfile.mkdtemp(prefix="socksd-bench6-")
    try:
        print("starting the echo target and two socksd...", file=sys.stderr)
        target = startTarget(arguments.budget + 30)
        extra = arguments.socksd_args.split()
        authPort = startSocksd(twistd, True, workdir, extra)
        plainPort = startSocksd(twistd, False, workdir, extra)
        outcome: dict = {}

        @defer.inlineCallbacks
        def run(reactor):
            cases = Cases(reactor, authPort, plainPort, target)
            yield cases.openSession(authPort)
            budgetEnd = began + arguments.budget - 3.0
            measuring = measure(reactor, arguments, cases, authPort, plainPort, budgetEnd)
            # The loops end by themselves (counts, windows, per-tunnel
            # timeouts); this is the last resort if the run overruns.
            watchdog = reactor.callLater(
                arguments.budget - (time.monotonic() - began) + 10, measuring.cancel
            )
            try:
                outcome["results"] = yield measuring
            except BaseException:
                traceback.print_exc()
                raise
            finally:
                if watchdog.active():
                    watchdog.cancel()

        task.react(lambda reactor: run(reactor), [])
    except SystemExit as stop:
        if stop.code not in (0, None):
            print("the measurement failed", file=sys.stderr)
            return int(stop.code) if isinstance(stop.code, int) else 1
    finally:
        stopChildren()
        try:
            os.rmdir(workdir)
        except OSError:
            pass
    results = outcome.get("results")
    if results is None:
        print("no results", file=sys.stderr)
        return 1
    print(
        f"socksd SOCKS6 vs SOCKS5 on 127.0.0.1, {os.cpu_count()} CPUs, "
        f"payload {len(PAYLOAD)} bytes echoed, "
        f"{'quick' if arguments.quick else 'full'} run in "
        f"{time.monotonic() - began:.0f} s"
    )
    print(table(results, arguments.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
