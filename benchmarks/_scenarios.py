"""
The benchmark scenarios: each is a function that measures once, either
straight to the targets (C{server} is L{None}: the direct baseline) or
through one running proxy, and returns its figures.

To add a scenario (UDP datagrams per second through UDP ASSOCIATE, SOCKS6,
...), write the function, describe its figures with L{Metric}s, list the
server features it needs, and add a L{Scenario} to L{SCENARIOS}. The harness
runs the direct baseline and every server in the same run, takes medians
over repetitions, and prints ratios.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import _procs
from _load import Via
from _servers import RunningServer, probe, redisCalls

LOAD = str(Path(__file__).resolve().parent / "_load.py")
DIRECT = "direct"
MiB = 1 << 20


class LoadFailed(Exception):
    """
    A load generator reported an error, or ran past its time limit.
    """


@dataclass(frozen=True, slots=True)
class Settings:
    """
    Sizes and durations for one run (see L{quickSettings}, L{fullSettings}).
    """

    bulkBytes: int
    bulkTunnels: int
    bulkBytesEach: int
    concurrency: int
    tpsSeconds: float
    tpsWarmup: float
    loadProcesses: int
    payloadSize: int
    idleTunnels: int
    pingCount: int
    pingWarmup: int
    pingSize: int
    repeats: int

    def __post_init__(self) -> None:
        if min(self.bulkBytes, self.bulkTunnels, self.bulkBytesEach) <= 0:
            raise ValueError("bulk sizes must be positive")
        if not 0 < self.loadProcesses <= self.concurrency <= 4096:
            raise ValueError("need 0 < load processes <= concurrency <= 4096")
        if not 0 < self.tpsSeconds <= 600 or not 0 <= self.tpsWarmup <= 60:
            raise ValueError("tps durations out of range")
        if not 0 < self.payloadSize <= 65536 or not 0 < self.pingSize <= 65536:
            raise ValueError("message sizes out of range")
        if self.idleTunnels <= 0 or self.pingCount <= 0 or self.pingWarmup < 0:
            raise ValueError("counts must be positive")
        if not 0 < self.repeats <= 100:
            raise ValueError("repeats out of range")


def fullSettings(processes: int) -> Settings:
    """
    The defaults: 512 MiB one way through one tunnel, 8 x 128 MiB, 5 s of
    tunnels per second, 10,000 idle tunnels, 20,000 pings, 3 repetitions.
    """
    return Settings(
        bulkBytes=512 * MiB,
        bulkTunnels=8,
        bulkBytesEach=128 * MiB,
        concurrency=64,
        tpsSeconds=5.0,
        tpsWarmup=1.0,
        loadProcesses=processes,
        payloadSize=64,
        idleTunnels=10_000,
        pingCount=20_000,
        pingWarmup=500,
        pingSize=1,
        repeats=3,
    )


def quickSettings(processes: int) -> Settings:
    """
    C{--quick}: small volumes, short windows, one repetition.
    """
    return Settings(
        bulkBytes=64 * MiB,
        bulkTunnels=8,
        bulkBytesEach=8 * MiB,
        concurrency=64,
        tpsSeconds=1.5,
        tpsWarmup=0.5,
        loadProcesses=processes,
        payloadSize=64,
        idleTunnels=2_000,
        pingCount=5_000,
        pingWarmup=500,
        pingSize=1,
        repeats=1,
    )


@dataclass(frozen=True, slots=True)
class Context:
    """
    What a scenario function gets besides the server: settings and targets.

    @ivar bulk: the sink/source server's address.
    @ivar echo: the echo server's address.
    @ivar once: the echo server that closes after C{payloadSize} bytes.
    @ivar fileLimit: the soft C{RLIMIT_NOFILE} every process inherited.
    """

    settings: Settings
    bulk: tuple[str, int]
    echo: tuple[str, int]
    once: tuple[str, int]
    fileLimit: int


def runLoad(mode: str, arguments: dict, timeout: float) -> dict:
    """
    Run one load generator process to its end and return its JSON result.

    @raise LoadFailed: it reported an error, printed nothing, or ran longer
        than C{timeout} seconds (then its process group is killed).
    """
    process = _procs.spawn(
        [sys.executable, LOAD, mode, json.dumps(arguments)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        output, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LoadFailed(f"{mode}: no result within {timeout:.0f} s") from None
    finally:
        _procs.stop(process)
    lines = output.strip().splitlines()
    if not lines:
        raise LoadFailed(f"{mode}: no output; {errors.strip()[-300:]}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise LoadFailed(f"{mode}: {result['error']}")
    return result


def _via(server: RunningServer | None) -> dict:
    return asdict(server.via if server is not None else Via(DIRECT))


def _bulkTimeout(count: int) -> float:
    # Generous: no proxy worth comparing moves less than 2 MB/s.
    return 60 + count / 2e6


def throughput(context: Context, server: RunningServer | None) -> dict[str, Any]:
    """
    Bulk MB/s each way through one tunnel, then through several at once.
    """
    settings = context.settings
    result: dict[str, Any] = {}
    for tunnels, count, suffix in (
        (1, settings.bulkBytes, "1"),
        (settings.bulkTunnels, settings.bulkBytesEach, "N"),
    ):
        for direction in ("up", "down"):
            outcome = runLoad(
                "bulk",
                {
                    "via": _via(server),
                    "target": context.bulk,
                    "direction": direction,
                    "tunnels": tunnels,
                    "bytesPerTunnel": count,
                    "timeout": 60,
                },
                _bulkTimeout(count * tunnels),
            )
            result[direction + suffix] = outcome["MBps"]
            result[direction + suffix + "Seconds"] = outcome["seconds"]
    return result


def tunnelsPerSecond(context: Context, server: RunningServer | None) -> dict[str, Any]:
    """
    Tunnels per second at a fixed concurrency, and setup latency; the
    servers' authentication (or not) decides which handshake is spoken.
    """
    settings = context.settings
    cpuBefore = None if server is None else _procs.cpuSecondsOf(server.pid)
    redisBefore = None if server is None else redisCalls(server.logPath.parent)
    outcome = runLoad(
        "tps",
        {
            "via": _via(server),
            "target": context.once,
            "concurrency": settings.concurrency,
            "processes": settings.loadProcesses,
            "seconds": settings.tpsSeconds,
            "warmup": settings.tpsWarmup,
            "payloadSize": settings.payloadSize,
            "maxErrors": 1000,
        },
        settings.tpsSeconds + settings.tpsWarmup + 60,
    )
    if outcome["tunnels"] == 0:
        raise LoadFailed(f"no tunnel completed; errors: {outcome['errorKinds']}")
    if cpuBefore is not None:
        # The proxy's CPU time over the whole load (warm-up included),
        # divided by every tunnel of the load: what a tunnel costs the
        # proxy, whatever share of the cores it got.
        used = _procs.cpuSecondsOf(server.pid) - cpuBefore
        outcome["cpuUsPerTunnel"] = used * 1e6 / max(1, outcome["allTunnels"])
    if redisBefore is not None:
        # Let the releases of the last tunnels arrive.
        time.sleep(0.5)
        calls = redisCalls(server.logPath.parent) - redisBefore
        outcome["redisCallsPerTunnel"] = calls / max(1, outcome["allTunnels"])
    return outcome


def memory(context: Context, server: RunningServer | None) -> dict[str, Any]:
    """
    The proxy's RSS growth per idle tunnel (C{VmRSS}, summed over the
    proxy's processes), measured after opening N tunnels that each echoed
    one byte.
    """
    if server is None:
        raise ValueError("the memory scenario measures a proxy")
    # Each tunnel costs the proxy two descriptors, the echo server and the
    # load generator one each.
    count = max(1, min(context.settings.idleTunnels, (context.fileLimit - 256) // 2))
    for _ in range(20):  # load lazily imported code and warm the allocator
        probe(server.via, context.echo)
    time.sleep(0.5)
    before = _procs.memoryOf(server.pid)
    openSeconds = 30 + count / 100
    process = _procs.spawn(
        [
            sys.executable,
            LOAD,
            "idle",
            json.dumps(
                {
                    "via": _via(server),
                    "target": context.echo,
                    "count": count,
                    "inflight": 128,
                    "openSeconds": openSeconds,
                    "holdSeconds": 120,
                }
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], openSeconds + 30)
        if not ready:
            raise LoadFailed(f"idle: tunnels not open within {openSeconds + 30:.0f} s")
        line = process.stdout.readline()
        if not line:
            raise LoadFailed(f"idle: no report; {process.stderr.read()[-300:]}")
        report = json.loads(line)
        if "error" in report:
            raise LoadFailed(f"idle: {report['error']}")
        time.sleep(1.0)
        after = _procs.memoryOf(server.pid)
        process.stdin.write("close\n")
        process.stdin.flush()
        process.wait(timeout=60)
    finally:
        _procs.stop(process)
    opened = report["opened"]
    if opened == 0:
        raise LoadFailed(f"no idle tunnel opened; errors: {report['errorKinds']}")
    return {
        "kibPerTunnel": (after["rssKiB"] - before["rssKiB"]) / opened,
        "pssKibPerTunnel": (after["pssKiB"] - before["pssKiB"]) / opened,
        "tunnels": opened,
        "requested": report["requested"],
        "errors": report["errors"],
        "errorKinds": report["errorKinds"],
        "rssBeforeKiB": before["rssKiB"],
        "rssAfterKiB": after["rssKiB"],
        "processesAfter": after["processes"],
    }


def latency(context: Context, server: RunningServer | None) -> dict[str, Any]:
    """
    Round-trip times of small messages echoed one at a time over one tunnel.
    """
    settings = context.settings
    return runLoad(
        "pingpong",
        {
            "via": _via(server),
            "target": context.echo,
            "size": settings.pingSize,
            "count": settings.pingCount,
            "warmup": settings.pingWarmup,
            "timeout": 10,
        },
        60 + settings.pingCount / 1000,
    )


@dataclass(frozen=True, slots=True)
class Metric:
    """
    One figure of a scenario, as printed.

    @ivar key: its key in the scenario function's result.
    @ivar higherIsBetter: how to read the ratios.
    @ivar againstDirect: whether a ratio against direct means anything.
    @ivar compare: whether ratios mean anything at all (not for counts).
    """

    key: str
    label: str
    unit: str
    higherIsBetter: bool
    againstDirect: bool = True
    compare: bool = True


Medians = dict[str, dict[str, dict[str, float]]]
"""scenario name -> server name -> metric key -> median value"""


@dataclass(frozen=True, slots=True)
class Scenario:
    """
    A scenario: its function, its figures, and what it needs.

    @ivar measure: C{measure(context, server)}; C{server} is L{None} for the
        direct baseline.
    @ivar direct: whether there is a direct baseline.
    @ivar baseline: what the direct row measures, printed with the table.
    @ivar auth: start the servers with username/password required.
    @ivar needs: server features required (see L{_servers.ServerSpec}).
    @ivar repeatable: take the median of several repetitions; if not, the
        scenario measures once, on freshly started servers.
    @ivar derive: computes more figures from all medians of the run:
        C{derive(medians) -> {server: {key: value}}}.
    @ivar requires: other scenarios whose medians C{derive} reads.
    """

    name: str
    title: str
    measure: Callable[[Context, RunningServer | None], dict[str, Any]]
    metrics: tuple[Metric, ...]
    direct: bool = True
    baseline: str = ""
    auth: bool = False
    needs: frozenset[str] = frozenset()
    repeatable: bool = True
    derive: Callable[[Medians], dict[str, dict[str, float]]] | None = None
    requires: tuple[str, ...] = ()


def _addedLatency(medians: Medians) -> dict[str, dict[str, float]]:
    rows = medians.get("latency", {})
    direct = rows.get(DIRECT)
    if not direct:
        return {}
    return {
        server: {
            "addedP50us": values["rttP50us"] - direct["rttP50us"],
            "addedP99us": values["rttP99us"] - direct["rttP99us"],
        }
        for server, values in rows.items()
        if server != DIRECT and "rttP50us" in values
    }


def _authOverPlain(medians: Medians) -> dict[str, dict[str, float]]:
    plain, auth = medians.get("tps", {}), medians.get("auth", {})
    return {
        server: {
            "authOverPlain": values["tunnelsPerSecond"]
            / plain[server]["tunnelsPerSecond"]
        }
        for server, values in auth.items()
        if server != DIRECT
        and "tunnelsPerSecond" in values
        and plain.get(server, {}).get("tunnelsPerSecond")
    }


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="throughput",
        title="Bulk throughput, MB/s (10^6 bytes/s)",
        measure=throughput,
        metrics=(
            Metric("up1", "upload, 1 tunnel", "MB/s", True),
            Metric("down1", "download, 1 tunnel", "MB/s", True),
            Metric("upN", "upload, 8 tunnels", "MB/s", True),
            Metric("downN", "download, 8 tunnels", "MB/s", True),
        ),
        baseline="direct: the same client processes connect straight to the sink/source server",
    ),
    Scenario(
        name="tps",
        title="Tunnels per second at concurrency 64 (SOCKS5 method 00, CONNECT, 64-byte echo, close)",
        measure=tunnelsPerSecond,
        metrics=(
            Metric("tunnelsPerSecond", "tunnels/s", "1/s", True),
            Metric("setupP50us", "setup p50", "us", False),
            Metric("setupP99us", "setup p99", "us", False),
            Metric("cpuUsPerTunnel", "CPU per tunnel", "us", False, False),
            Metric("redisCallsPerTunnel", "Redis round trips per tunnel", "", False, False, False),
        ),
        baseline=(
            "direct: TCP connect + 64-byte echo + close (the echo server closes "
            "first), same generator; setup = connect() until the CONNECT reply "
            "(direct: until connected); CPU per tunnel = the proxy's CPU time "
            "(user + system, all its processes) over the load / its tunnels"
        ),
    ),
    Scenario(
        name="memory",
        title="Proxy memory per idle tunnel (VmRSS growth / tunnels)",
        measure=memory,
        metrics=(
            Metric("kibPerTunnel", "RSS per tunnel", "KiB", False, False),
            Metric("pssKibPerTunnel", "PSS per tunnel", "KiB", False, False),
            Metric("tunnels", "idle tunnels", "", True, False, False),
        ),
        direct=False,
        baseline="no direct row: this is the proxy's own memory, summed over its processes",
        repeatable=False,
    ),
    Scenario(
        name="latency",
        title="Round-trip time, one tunnel, 1-byte ping-pong",
        measure=latency,
        metrics=(
            Metric("rttP50us", "RTT p50", "us", False),
            Metric("rttP99us", "RTT p99", "us", False),
            Metric("addedP50us", "added p50", "us", False, False),
            Metric("addedP99us", "added p99", "us", False, False),
        ),
        baseline="direct: the same ping-pong straight to the echo server; added = proxy - direct",
        derive=_addedLatency,
    ),
    Scenario(
        name="auth",
        title="Tunnels per second with SOCKS5 username/password (RFC 1929)",
        measure=tunnelsPerSecond,
        metrics=(
            Metric("tunnelsPerSecond", "tunnels/s", "1/s", True),
            Metric("setupP50us", "setup p50", "us", False),
            Metric("setupP99us", "setup p99", "us", False),
            Metric("authOverPlain", "auth / no auth", "x", True, False),
        ),
        baseline="direct: as in tps (no SOCKS); auth / no auth = this tunnels/s over the tps scenario's",
        auth=True,
        needs=frozenset({"auth"}),
        derive=_authOverPlain,
        requires=("tps",),
    ),
)

SCENARIO_NAMES = tuple(scenario.name for scenario in SCENARIOS)


def scenarioNamed(name: str) -> Scenario:
    """
    The L{Scenario} called C{name}.

    @raise KeyError: there is none.
    """
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(name)
